// Command benchhub serves a set of large generated files as a Hugging Face
// Hub repo (API, resolve redirects, CDN with Range) on 127.0.0.1, for
// scripts/bench-download.sh. The files are generated once into -cache and
// reused; their sha256 is cached next to them.
//
// It prints "endpoint <url>" and then "url <cdn url> <name>" per file on
// stdout, then serves until stdin is closed or it is killed.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/chatglm/chatglm/hub/hubtest"
)

func main() {
	cache := flag.String("cache", "", "folder for the generated files (required)")
	n := flag.Int("files", 3, "number of files")
	sizeMB := flag.Int64("size-mb", 1024, "size of each file in MiB")
	repo := flag.String("repo", "bench/files", "repo id to serve")
	flag.Parse()
	if *cache == "" {
		log.Fatal("benchhub: -cache is required")
	}
	if err := os.MkdirAll(*cache, 0o755); err != nil {
		log.Fatal(err)
	}
	files := map[string]*hubtest.File{"config.json": {Data: []byte(`{"model_type":"bench"}`)}}
	var names []string
	for i := 1; i <= *n; i++ {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i, *n)
		path := filepath.Join(*cache, fmt.Sprintf("%s.%dMiB", name, *sizeMB))
		sum, err := ensure(path, *sizeMB<<20, uint64(i))
		if err != nil {
			log.Fatal(err)
		}
		f := &hubtest.File{Disk: path, LFS: true}
		f.SetDiskSHA256(sum, *sizeMB<<20)
		files[name] = f
		names = append(names, name)
	}
	hubL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	cdnL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := hubtest.NewOn(hubL, cdnL)
	commit, err := srv.SetRepo(*repo, files)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("endpoint %s\n", srv.URL())
	for _, name := range names {
		// The CDN location, as the resolve route would redirect to it.
		req, _ := http.NewRequest(http.MethodHead, fmt.Sprintf("%s/%s/resolve/%s/%s", srv.URL(), *repo, commit, name), nil)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Printf("url %s %s\n", resp.Header.Get("Location"), name)
	}
	fmt.Println("ready")
	os.Stdout.Sync()
	_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	srv.Close()
}

// ensure generates path (size pseudo-random bytes) unless it exists, and
// returns its sha256 (cached in path.sha256).
func ensure(path string, size int64, seed uint64) (string, error) {
	if st, err := os.Stat(path); err == nil && st.Size() == size {
		if b, err := os.ReadFile(path + ".sha256"); err == nil {
			if s, _, _ := strings.Cut(string(b), "\n"); len(s) == 64 {
				return s, nil
			}
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 4<<20)
	r := rand.NewChaCha8([32]byte{byte(seed), 1, 2, 3})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		k := min(int64(len(buf)), left)
		_, _ = r.Read(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			f.Close()
			return "", err
		}
		left -= k
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return sum, os.WriteFile(path+".sha256", []byte(sum+"\n"+strconv.FormatInt(size, 10)+"\n"), 0o644)
}
