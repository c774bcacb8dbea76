package vhd

import "container/list"

// vxPageCache is a bounded LRU of 4 KiB metadata pages (BAT and sector
// bitmap pages) keyed by file offset. The log writer keeps it coherent by
// storing every page it applies.
type vxPageCache struct {
	max int
	m   map[int64]*list.Element
	lru list.List
	// last is the element get returned last: a run of lookups in one page
	// (a block table walk) skips the map and the LRU move.
	last *list.Element
}

type vxPage struct {
	off  int64
	data []byte
}

// vxCachePages bounds the cache: 1024 pages = 4 MiB.
const vxCachePages = 1024

func newVXPageCache(max int) *vxPageCache {
	return &vxPageCache{max: max, m: make(map[int64]*list.Element)}
}

func (c *vxPageCache) get(off int64) []byte {
	if e := c.last; e != nil && e.Value.(*vxPage).off == off {
		return e.Value.(*vxPage).data
	}
	if e, ok := c.m[off]; ok {
		c.lru.MoveToFront(e)
		c.last = e
		return e.Value.(*vxPage).data
	}
	return nil
}

func (c *vxPageCache) put(off int64, data []byte) {
	if e, ok := c.m[off]; ok {
		e.Value.(*vxPage).data = data
		c.lru.MoveToFront(e)
		return
	}
	c.m[off] = c.lru.PushFront(&vxPage{off, data})
	for c.lru.Len() > c.max {
		e := c.lru.Back()
		if e == c.last {
			c.last = nil
		}
		c.lru.Remove(e)
		delete(c.m, e.Value.(*vxPage).off)
	}
}

func (c *vxPageCache) reset() {
	c.m = make(map[int64]*list.Element)
	c.lru.Init()
	c.last = nil
}
