// go_connect_client.go: Go's HTTP/2 client opening a CONNECT tunnel (RFC 9113 §8.5) through
// an HTTP/2 proxy, a peer for aioh2s's proxy example (tests/test_tunnels.py builds and runs
// it, in GOPATH mode like tests/interop/go_server.go).
//
//	-proxy HOST:PORT   the proxy; TLS with ALPN h2 when -ca is given (net/http's Transport,
//	                   whose HTTP/2 is the copy of x/net/http2 bundled in the standard
//	                   library), else h2c with prior knowledge (x/net/http2's Transport)
//	-target HOST:PORT  the tunnel's target, sent as :authority
//	-n N               bytes to send through the tunnel (byte i is i % 251), then END_STREAM
//
// It sends the bytes while it reads what comes back until the end of the response body,
// and prints one JSON line: the status, the bytes sent and received with their SHA-256, and
// the error that ended the exchange ("" if none).
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"golang.org/x/net/http2"
)

var (
	proxy  = flag.String("proxy", "", "the proxy, host:port")
	target = flag.String("target", "", "where to tunnel to, host:port")
	caFile = flag.String("ca", "", "CA file: TLS to the proxy (h2c without it)")
	n      = flag.Int("n", 0, "bytes to send through the tunnel")
)

type result struct {
	Status     int    `json:"status"`
	Proto      string `json:"proto"`
	Sent       int    `json:"sent"`
	SentSHA    string `json:"sent_sha256"`
	Received   int    `json:"received"`
	ReceivedSH string `json:"received_sha256"`
	Body       string `json:"body"`
	Error      string `json:"error"`
}

func transport() (http.RoundTripper, string) {
	if *caFile == "" {
		return &http2.Transport{
			AllowHTTP: true,
			DialTLS: func(network, addr string, _ *tls.Config) (net.Conn, error) {
				return net.Dial(network, addr)
			},
		}, "http"
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fail(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "localhost"},
		ForceAttemptHTTP2: true,
	}, "https"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(2)
}

func main() {
	flag.Parse()
	rt, scheme := transport()
	body, feed := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, scheme+"://"+*proxy, body)
	if err != nil {
		fail(err)
	}
	req.Host = *target // :authority; the request itself goes to the proxy
	var res result
	sent := sha256.New()
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		block := make([]byte, 251*64)
		for i := range block {
			block[i] = byte(i % 251)
		}
		left := *n
		for left > 0 {
			k := len(block)
			if k > left {
				k = left
			}
			if _, err := feed.Write(block[:k]); err != nil {
				return
			}
			sent.Write(block[:k])
			left -= k
		}
		feed.Close() // END_STREAM: the proxy half-closes its TCP connection
	}()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		res.Error = err.Error()
		out(res)
		return
	}
	defer resp.Body.Close()
	res.Status, res.Proto = resp.StatusCode, resp.Proto
	got := sha256.New()
	if resp.StatusCode != http.StatusOK {
		text, _ := io.ReadAll(resp.Body)
		res.Body = string(text)
		body.CloseWithError(fmt.Errorf("refused"))
		out(res)
		return
	}
	k, err := io.Copy(got, resp.Body)
	res.Received = int(k)
	if err != nil {
		res.Error = err.Error()
	}
	res.ReceivedSH = hex.EncodeToString(got.Sum(nil))
	if err == nil {
		<-fed // the target answered our END_STREAM: everything was written
		res.Sent = *n
		res.SentSHA = hex.EncodeToString(sent.Sum(nil))
	}
	out(res)
}

func out(res result) {
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
}
