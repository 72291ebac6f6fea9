// go_server.go: an HTTP/2 server built on golang.org/x/net/http2, a peer for aioh2s's client
// tests (tests/peers.py builds and runs it). It speaks h2c with prior knowledge, or TLS with
// ALPN h2 when -cert and -key are given, and closes connections on its own the ways Go
// servers do:
//
//	-max-streams N   SETTINGS_MAX_CONCURRENT_STREAMS (0: Go's default, 250)
//	-idle D          IdleTimeout: GOAWAY(NO_ERROR) after D without open streams, then close
//	-goaway-every N  the Nth request of a connection answers with "Connection: close", which
//	                 makes x/net/http2 send GOAWAY(NO_ERROR, last stream id = the highest it
//	                 read), finish the open streams and close the TCP connection one second
//	                 after the last one ended (streams above the last stream id are ignored)
//	-max-age D       the same graceful shutdown D after the connection was accepted, whatever
//	                 it is doing at the time
//
// Routes: /count (needs header x-request-id; counts how often each id was seen, for duplicate
// detection), /stats (JSON: totals and the ids seen more than once), /echo (streams the
// request body back), /slow?ms=N (answers after N ms), /bytes?n=N (N bytes of i%251).
//
// The first line on stdout is "LISTEN 127.0.0.1:PORT". The server exits when stdin closes,
// so a test runner that dies does not leave it behind.
//
// Each connection is served by http2.Server.ServeConn from our own accept loop rather than
// through net/http's Server (or h2c.NewHandler, which ends in the same ServeConn call for
// prior knowledge), so that each connection can be shut down gracefully on its own: a
// connection's http2.Server is registered with a throwaway http.Server by
// http2.ConfigureServer, and that http.Server's Shutdown starts the graceful shutdown of
// exactly the connections it knows: this one.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

var (
	addr        = flag.String("addr", "127.0.0.1:0", "listen address")
	certFile    = flag.String("cert", "", "TLS certificate chain (PEM); with -key: TLS, else h2c")
	keyFile     = flag.String("key", "", "TLS private key (PEM)")
	maxStreams  = flag.Uint("max-streams", 0, "SETTINGS_MAX_CONCURRENT_STREAMS (0: Go's default)")
	idle        = flag.Duration("idle", 0, "idle timeout (0: none)")
	goawayEvery = flag.Int64("goaway-every", 0, "gracefully close a connection at its Nth request")
	maxAge      = flag.Duration("max-age", 0, "gracefully close a connection this long after accept")
)

// conn is what the handler knows about the connection a request came on.
type conn struct {
	id       int64
	requests int64 // atomic
	once     sync.Once
}

// goaway counts the connection's graceful shutdown, once; start (if not nil) starts it.
func (cs *conn) goaway(start func()) {
	cs.once.Do(func() {
		atomic.AddInt64(&goaways, 1)
		if start != nil {
			start()
		}
	})
}

type connKey struct{}

var (
	mu         sync.Mutex
	seen       = map[string]int64{} // x-request-id -> how often /count saw it
	countTotal int64
	accepted   int64 // atomic: connections accepted
	closed     int64 // atomic: connections whose ServeConn returned
	goaways    int64 // atomic: graceful shutdowns started by -goaway-every or -max-age
)

func main() {
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var tlsConf *tls.Config
	if *certFile != "" || *keyFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() { // exit when our parent goes away
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	var ids int64
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c, tlsConf, atomic.AddInt64(&ids, 1))
	}
}

func serve(c net.Conn, tlsConf *tls.Config, id int64) {
	atomic.AddInt64(&accepted, 1)
	defer atomic.AddInt64(&closed, 1)
	defer c.Close()
	if tlsConf != nil {
		tc := tls.Server(c, tlsConf)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			log.Printf("conn %d: TLS handshake: %v", id, err)
			return
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			log.Printf("conn %d: ALPN negotiated %q, not h2", id, p)
			return
		}
		_ = tc.SetDeadline(time.Time{})
		c = tc
	}
	h2 := &http2.Server{MaxConcurrentStreams: uint32(*maxStreams), IdleTimeout: *idle}
	base := &http.Server{}
	if err := http2.ConfigureServer(base, h2); err != nil {
		log.Fatal(err)
	}
	cs := &conn{id: id}
	if *maxAge > 0 {
		t := time.AfterFunc(*maxAge, func() {
			// With no listener and no HTTP/1 connections Shutdown returns at once, after
			// running the OnShutdown hook ConfigureServer registered: GOAWAY on this connection.
			cs.goaway(func() { go func() { _ = base.Shutdown(context.Background()) }() })
		})
		defer t.Stop()
	}
	ctx := context.WithValue(context.Background(), connKey{}, cs)
	h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, BaseConfig: base, Handler: http.HandlerFunc(route)})
}

func route(w http.ResponseWriter, r *http.Request) {
	cs := r.Context().Value(connKey{}).(*conn)
	n := atomic.AddInt64(&cs.requests, 1)
	if *goawayEvery > 0 && n == *goawayEvery {
		// x/net/http2 turns this header into a graceful shutdown of the connection.
		w.Header().Set("Connection", "close")
		cs.goaway(nil)
	}
	w.Header().Set("x-conn", strconv.FormatInt(cs.id, 10))
	w.Header().Set("x-conn-request", strconv.FormatInt(n, 10))
	q := r.URL.Query()
	switch r.URL.Path {
	case "/count":
		rid := r.Header.Get("x-request-id")
		if rid == "" {
			http.Error(w, "x-request-id header missing\n", http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen[rid]++
		count := seen[rid]
		countTotal++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": rid, "seen": count, "conn": cs.id, "conn_request": n,
		})
	case "/stats":
		mu.Lock()
		dups := map[string]int64{}
		for k, v := range seen {
			if v > 1 {
				dups[k] = v
			}
		}
		stats := map[string]any{
			"total": countTotal, "distinct": len(seen), "duplicates": dups,
			"connections": atomic.LoadInt64(&accepted), "closed": atomic.LoadInt64(&closed),
			"goaways": atomic.LoadInt64(&goaways),
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(stats)
	case "/echo":
		// Full duplex: each chunk goes back as soon as it arrives.
		flusher := w.(http.Flusher)
		w.WriteHeader(http.StatusOK)
		buf := make([]byte, 32*1024)
		for {
			k, err := r.Body.Read(buf)
			if k > 0 {
				if _, werr := w.Write(buf[:k]); werr != nil {
					return
				}
				flusher.Flush()
			}
			if err != nil {
				return
			}
		}
	case "/slow":
		ms, _ := strconv.Atoi(q.Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			fmt.Fprintf(w, "slept %d ms\n", ms)
		case <-r.Context().Done():
		}
	case "/bytes":
		left, _ := strconv.Atoi(q.Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(left))
		block := make([]byte, 251*64)
		for i := range block {
			block[i] = byte(i % 251)
		}
		for left > 0 {
			k := len(block)
			if left < k {
				k = left
			}
			if _, err := w.Write(block[:k]); err != nil {
				return
			}
			left -= k
		}
	default:
		http.NotFound(w, r)
	}
}
