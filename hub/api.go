package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// apiClient makes the metadata requests of a source (refs, tree pages,
// file lists, resolve HEADs) under the retry policy, with a time limit on
// each attempt, body included, and a size limit on each body.
type apiClient struct {
	client  *http.Client
	retry   retryPolicy
	timeout time.Duration // one attempt, headers and body
}

// newAPIClient uses the default Options for the policy and limits.
func newAPIClient(c *http.Client) apiClient {
	var o Options
	o.defaults()
	a := apiClient{client: c}
	a.configure(&o)
	return a
}

// configure takes the policy and limits from opts (after defaults).
func (a *apiClient) configure(o *Options) {
	a.retry = newRetryPolicy(o)
	a.timeout = o.APITimeout
}

// get GETs u and returns its body, at most maxListingBody bytes.
func (a *apiClient) get(ctx context.Context, u string) (body []byte, hdr http.Header, err error) {
	err = a.retry.do(ctx, "GET "+redactURL(u), func() (int64, error) {
		body, hdr, err = a.getOnce(ctx, u)
		return 0, err
	})
	return body, hdr, err
}

func (a *apiClient) getOnce(ctx context.Context, u string) ([]byte, http.Header, error) {
	actx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, permanent(redactErr(err))
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, nil, a.attemptError(actx, ctx, u, redactErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, clientError(newHTTPError(resp))
	}
	if resp.ContentLength > maxListingBody {
		return nil, nil, permanent(fmt.Errorf("GET %s: answer of %d bytes is larger than the limit of %d", redactURL(u), resp.ContentLength, maxListingBody))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxListingBody+1))
	if err != nil {
		return nil, nil, a.attemptError(actx, ctx, u, fmt.Errorf("GET %s: reading the answer: %w", redactURL(u), redactErr(err)))
	}
	if len(b) > maxListingBody {
		return nil, nil, permanent(fmt.Errorf("GET %s: answer larger than the limit of %d bytes", redactURL(u), maxListingBody))
	}
	return b, resp.Header, nil
}

// attemptError names the attempt's time limit when that is what ended it.
func (a *apiClient) attemptError(actx, ctx context.Context, u string, err error) error {
	if ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("GET %s: no complete answer within %s: %w", redactURL(u), a.timeout, err)
	}
	return err
}

// redactURL drops the credentials (user:password@) and the query
// (presigned URLs carry signatures) of a URL for a message.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return redact(u)
}

// redactErr redacts the URL inside a *url.Error, which net/http builds
// from the request URL (with its user name and query).
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = redactURL(ue.URL)
	}
	return err
}
