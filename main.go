// Command trellis is the Trellis service mesh: agent, servers and CLI in one binary.
package main

import "os"

func main() {
	os.Exit(realMain())
}

func realMain() int {
	return 0
}
