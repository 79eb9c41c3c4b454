package resolver

import (
	"container/list"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// key identifies a question: the lowercased absolute name and the type.
type key struct {
	name  string
	qtype uint16
}

// answer is the outcome of one question: records, or an error.
// Not-found answers carry a ttl too (RFC 2308); other errors never do.
type answer struct {
	rrs []dns.RR
	err *net.DNSError
	ttl time.Duration
}

// result returns what a lookup of name returns for a. Every caller gets
// its own error, naming the name it asked for.
func (a answer) result(name string) ([]dns.RR, error) {
	if a.err != nil {
		err := *a.err
		err.Name = name
		return nil, &err
	}
	return a.rrs, nil
}

// cache keeps answers until they expire, dropping the least recently used
// one when full. The records it holds are shared and must not be changed.
type cache struct {
	mu   sync.Mutex
	size int
	lru  *list.List // of *entry, most recently used first
	m    map[key]*list.Element
}

type entry struct {
	key     key
	ans     answer
	expires time.Time
}

func newCache(size int) *cache {
	return &cache{size: size, lru: list.New(), m: map[key]*list.Element{}}
}

func (c *cache) get(k key, now time.Time) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return answer{}, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.m, k)
		return answer{}, false
	}
	c.lru.MoveToFront(el)
	return e.ans, true
}

func (c *cache) put(k key, a answer, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		el.Value = &entry{k, a, expires}
		c.lru.MoveToFront(el)
		return
	}
	c.m[k] = c.lru.PushFront(&entry{k, a, expires})
	if c.lru.Len() > c.size {
		el := c.lru.Back()
		c.lru.Remove(el)
		delete(c.m, el.Value.(*entry).key)
	}
}

// flights runs at most one query per key: lookups of a key already being
// queried wait for that query's answer instead of sending their own.
type flights struct {
	mu sync.Mutex
	m  map[key]*flight
}

// flight is one query; ans is set before done is closed.
type flight struct {
	done chan struct{}
	ans  answer
}

// start returns the flight for k, starting fn for it if there is none.
// The flight ends after fn has cached its answer, so a lookup finds the
// answer either in the cache or here; one that misses the cache just as
// a flight ends sends one more query, which is harmless.
func (f *flights) start(k key, fn func() answer) *flight {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.m[k]; ok {
		return fl
	}
	fl := &flight{done: make(chan struct{})}
	f.m[k] = fl
	go func() {
		fl.ans = fn()
		f.mu.Lock()
		delete(f.m, k)
		f.mu.Unlock()
		close(fl.done)
	}()
	return fl
}
