package ca

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadConfig_Errors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"array.json", "[]", "array.json:1:2: want a CA configuration object, not an array"},
		{"number.json", "5", "number.json:1:2: want a CA configuration object, not a number"},
		{"field.json", `{"Provider": 5}`, "field.json:1:15: Provider: want a string, not a number"},
		{"config.json", `{"Config": []}`, "config.json:1:13: Config: want an object, not an array"},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := readConfig(p)
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("readConfig(%s) = %v, want an error ending %q", tc.body, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "api.") {
			t.Errorf("readConfig(%s) names a Go type: %v", tc.body, err)
		}
	}
	missing := filepath.Join(dir, "nonexist.json")
	if _, err := readConfig(missing); err == nil || err.Error() != missing+": no such file" {
		t.Errorf("missing file: %v", err)
	}
	if _, err := readConfig(dir); err == nil || err.Error() != dir+" is a directory, not a JSON file" {
		t.Errorf("directory: %v", err)
	}
}
