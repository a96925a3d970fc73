package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/chatglm/chatglm/gen"
)

// APIError is an error in OpenAI's shape, with the HTTP status it is sent
// with: {"error": {"message", "type", "param", "code"}}.
type APIError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *APIError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

// Error types, as OpenAI names them.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typePermission     = "permission_error"
	typeNotFound       = "not_found_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
	typeTimeout        = "timeout_error"
)

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func newAPIError(status int, typ, code, param, format string, args ...any) *APIError {
	return &APIError{Status: status, Type: typ, Code: strPtr(code), Param: strPtr(param), Message: fmt.Sprintf(format, args...)}
}

// badRequest is a 400 invalid_request_error about param.
func badRequest(param, format string, args ...any) *APIError {
	return newAPIError(http.StatusBadRequest, typeInvalidRequest, "", param, format, args...)
}

// errorBody is the JSON body of an error response and of an error event in
// a stream.
type errorBody struct {
	Error *APIError `json:"error"`
}

// writeError sends err as an OpenAI error response. Errors that are not
// *APIError become 500 server errors.
func writeError(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	if ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	if ae.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chatglm"`)
	}
	writeJSON(w, ae.Status, errorBody{Error: ae})
}

// asAPIError converts any error into an *APIError.
func asAPIError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var tl *gen.PromptTooLongError
	if errors.As(err, &tl) {
		return newAPIError(http.StatusBadRequest, typeInvalidRequest, "context_length_exceeded", "messages", "%s", capitalize(tl.Error()))
	}
	return newAPIError(http.StatusInternalServerError, typeServer, "", "", "internal error: %v", err)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// decodeError turns a JSON decoding error into a 400 that names the field.
func decodeError(err error) *APIError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return newAPIError(http.StatusRequestEntityTooLarge, typeInvalidRequest, "request_too_large", "",
			"request body is larger than the limit of %d bytes", mbe.Limit)
	case errors.As(err, &syn):
		return newAPIError(http.StatusBadRequest, typeInvalidRequest, "invalid_json", "",
			"we could not parse the JSON body of your request: %v (at byte %d)", syn, syn.Offset)
	case errors.As(err, &typ):
		field := strings.TrimPrefix(typ.Field, "samplingFields.")
		if field == "" {
			return newAPIError(http.StatusBadRequest, typeInvalidRequest, "invalid_json", "",
				"the request body must be a JSON object, not %s", typ.Value)
		}
		return newAPIError(http.StatusBadRequest, typeInvalidRequest, "invalid_type", field,
			"invalid type for '%s': expected %s, but got %s", field, jsonTypeName(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, errEmptyBody):
		return newAPIError(http.StatusBadRequest, typeInvalidRequest, "invalid_json", "", "the request body is empty; send a JSON object")
	}
	return newAPIError(http.StatusBadRequest, typeInvalidRequest, "invalid_json", "", "we could not parse the JSON body of your request: %v", err)
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return kind
}

var errEmptyBody = errors.New("empty body")

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"message":"internal error: cannot encode the response","type":"server_error","param":null,"code":null}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)+1))
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
