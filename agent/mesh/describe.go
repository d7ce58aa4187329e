package mesh

import "github.com/trellismesh/trellis/connect"

// IntentionsFor returns the intentions held that apply to destination
// (wildcards included), in precedence order; nil while the intentions are
// not known yet. The values are shared: callers must not change them.
func (c *Cache) IntentionsFor(destination string) []*connect.Intention {
	set, _, ok := c.intentions.get()
	if !ok || set == nil {
		return nil
	}
	list, err := set.Match("destination", destination)
	if err != nil {
		return nil
	}
	return list
}
