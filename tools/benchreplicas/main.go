// Command benchreplicas is the conversation load behind
// scripts/bench-replicas.sh (a benchmark tool, not a test). Two modes:
//
//	benchreplicas -url http://127.0.0.1:8080 -conversations 6 -turns 10 [-session] -label affinity
//	    runs that many multi-turn chats at once through the URL (a balancer
//	    in front of replicas), streaming each turn and timing its first
//	    token; -session sends each conversation's X-Session-Id header. It
//	    prints one JSON line: mean time to first token per turn, over turns
//	    2..N, prompt tokens and those served from a replica's cache.
//	benchreplicas -compare affinity.json roundrobin.json one.json three.json -model NAME
//	    reads the two conversation runs and two `loadgen` runs (one
//	    replica, three behind the balancer) and prints the comparison as
//	    text and as one JSON line.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/chatglm/chatglm/server"
)

// SessionHeader is the header a client sends to keep a conversation on one
// replica (docs/scaling.md).
const SessionHeader = server.SessionHeader

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreplicas:", err)
		os.Exit(1)
	}
}

func run() error {
	url := flag.String("url", "http://127.0.0.1:8080", "balancer base URL")
	convs := flag.Int("conversations", 6, "conversations run at once")
	turns := flag.Int("turns", 10, "turns per conversation")
	words := flag.Int("words", 40, "words in each user message")
	maxTokens := flag.Int("max-tokens", 16, "max_tokens of each reply")
	session := flag.Bool("session", false, "send "+SessionHeader+" (one id per conversation)")
	label := flag.String("label", "", "label of the result line")
	compare := flag.Bool("compare", false, "compare result files: affinity, round robin, one replica, three replicas")
	model := flag.String("model", "", "model description for -compare")
	flag.Parse()
	if *compare {
		if flag.NArg() != 4 {
			return errors.New("-compare wants four files: affinity.json roundrobin.json one.json three.json")
		}
		return compareRuns(flag.Args(), *model)
	}
	if *convs < 1 || *turns < 1 || *turns > 100 || *words < 1 {
		return errors.New("-conversations and -words must be at least 1, -turns 1..100")
	}
	res := conversations(*url, *convs, *turns, *words, *maxTokens, *session)
	res.Label = *label
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
	return nil
}

// convResult is one conversation run.
type convResult struct {
	Label         string    `json:"label"`
	Conversations int       `json:"conversations"`
	Turns         int       `json:"turns"`
	Session       bool      `json:"session_header"`
	Failures      int       `json:"failures"`
	FirstError    string    `json:"first_error,omitempty"`
	TTFTByTurn    []float64 `json:"ttft_ms_by_turn"` // mean over conversations
	MeanTTFT      float64   `json:"mean_ttft_ms"`    // turns 2..N
	PromptTokens  int       `json:"prompt_tokens"`
	CachedTokens  int       `json:"cached_tokens"`
	WallSeconds   float64   `json:"wall_s"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func conversations(url string, n, turns, words, maxTokens int, session bool) convResult {
	res := convResult{Conversations: n, Turns: turns, Session: session, TTFTByTurn: make([]float64, turns)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	counts := make([]int, turns)
	start := time.Now()
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Minute}
			id := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), c)
			var msgs []message
			for t := range turns {
				msgs = append(msgs, message{"user", userText(c, t, words)})
				hdr := ""
				if session {
					hdr = id
				}
				tr, err := turn(client, url, hdr, msgs, maxTokens)
				mu.Lock()
				if err != nil {
					res.Failures++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
					mu.Unlock()
					return
				}
				res.TTFTByTurn[t] += tr.ttft.Seconds() * 1000
				counts[t]++
				res.PromptTokens += tr.prompt
				res.CachedTokens += tr.cached
				mu.Unlock()
				msgs = append(msgs, message{"assistant", tr.reply})
			}
		}()
	}
	wg.Wait()
	res.WallSeconds = time.Since(start).Seconds()
	var sum float64
	var k int
	for t := range turns {
		if counts[t] > 0 {
			res.TTFTByTurn[t] /= float64(counts[t])
		}
		if t > 0 {
			sum += res.TTFTByTurn[t] * float64(counts[t])
			k += counts[t]
		}
	}
	if k > 0 {
		res.MeanTTFT = sum / float64(k)
	}
	return res
}

// userText is a user message of about words words, different per
// conversation and turn.
func userText(conv, turn, words int) string {
	vocab := []string{"river", "mountain", "city", "garden", "library", "winter", "music", "engine", "harbor", "forest", "window", "market"}
	var b strings.Builder
	fmt.Fprintf(&b, "Conversation %d, question %d:", conv, turn+1)
	for i := range words {
		b.WriteString(" " + vocab[(conv*7+turn*3+i)%len(vocab)])
	}
	return b.String()
}

type turnResult struct {
	ttft           time.Duration
	reply          string
	prompt, cached int
}

// turn streams one chat completion and times its first content token.
func turn(client *http.Client, url, session string, msgs []message, maxTokens int) (turnResult, error) {
	body, _ := json.Marshal(map[string]any{"messages": msgs, "max_tokens": maxTokens, "temperature": 0,
		"stream": true, "stream_options": map[string]any{"include_usage": true}})
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return turnResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if session != "" {
		req.Header.Set(SessionHeader, session)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return turnResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return turnResult{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var tr turnResult
	var reply strings.Builder
	done := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				PromptTokens int `json:"prompt_tokens"`
				Details      *struct {
					CachedTokens int `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			} `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return tr, fmt.Errorf("bad event %.100q: %w", data, err)
		}
		if ev.Error != nil {
			return tr, errors.New(ev.Error.Message)
		}
		for _, ch := range ev.Choices {
			if ch.Delta.Content != "" && tr.ttft == 0 {
				tr.ttft = time.Since(start)
			}
			reply.WriteString(ch.Delta.Content)
		}
		if ev.Usage != nil {
			tr.prompt = ev.Usage.PromptTokens
			if ev.Usage.Details != nil {
				tr.cached = ev.Usage.Details.CachedTokens
			}
		}
	}
	if !done {
		return tr, fmt.Errorf("stream ended without [DONE]: %v", sc.Err())
	}
	if tr.ttft == 0 { // an empty reply: its end is its first token
		tr.ttft = time.Since(start)
	}
	tr.reply = reply.String()
	return tr, nil
}

// loadRun is the part of a loadgen result line the comparison reads.
type loadRun struct {
	Label    string  `json:"label"`
	Failures int     `json:"failures"`
	TPS      float64 `json:"tokens_per_s"`
	Requests int     `json:"requests"`
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func compareRuns(files []string, model string) error {
	var aff, rr convResult
	var one, three loadRun
	for i, v := range []any{&aff, &rr, &one, &three} {
		if err := readJSON(files[i], v); err != nil {
			return err
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	out := map[string]any{
		"model":                    model,
		"conversations":            aff.Conversations,
		"turns":                    aff.Turns,
		"affinity_mean_ttft_ms":    aff.MeanTTFT,
		"roundrobin_mean_ttft_ms":  rr.MeanTTFT,
		"ttft_ratio":               rr.MeanTTFT / aff.MeanTTFT,
		"affinity_cached_share":    share(aff.CachedTokens, aff.PromptTokens),
		"roundrobin_cached_share":  share(rr.CachedTokens, rr.PromptTokens),
		"affinity_ttft_by_turn":    aff.TTFTByTurn,
		"roundrobin_ttft_by_turn":  rr.TTFTByTurn,
		"one_replica_tokens_per_s": one.TPS,
		"three_tokens_per_s":       three.TPS,
		"tps_ratio":                three.TPS / one.TPS,
		"failures":                 aff.Failures + rr.Failures + one.Failures + three.Failures,
		"loadavg":                  strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "),
	}
	fmt.Printf("replicas: %d conversations x %d turns at once; mean TTFT of turns 2-%d: affinity %.0f ms (%.0f%% of prompt tokens from cache), round robin %.0f ms (%.0f%%): %.2fx\n",
		aff.Conversations, aff.Turns, aff.Turns, aff.MeanTTFT, 100*share(aff.CachedTokens, aff.PromptTokens),
		rr.MeanTTFT, 100*share(rr.CachedTokens, rr.PromptTokens), rr.MeanTTFT/aff.MeanTTFT)
	fmt.Printf("replicas: aggregate tokens/s: 1 replica %.1f, 3 replicas behind HAProxy %.1f: %.2fx\n", one.TPS, three.TPS, three.TPS/one.TPS)
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	if n := out["failures"].(int); n > 0 {
		return fmt.Errorf("%d failed requests", n)
	}
	return nil
}

func share(part, whole int) float64 {
	if whole == 0 {
		return 0
	}
	return float64(part) / float64(whole)
}
