// Package hub downloads model repositories from the Hugging Face Hub (or a
// mirror speaking the same API, such as hf-mirror.com) and from ModelScope
// into a local store, and manages that store.
//
// # Protocol
//
// For the Hub, a revision name is resolved to a commit with
// GET /api/models/{repo}/refs (a 40-hex revision is taken as a commit), and the
// files of that commit are listed with GET /api/models/{repo}/tree/{commit}
// (recursive, following Link rel="next" pages), which gives each file's size,
// git blob id and, for LFS files, its sha256. Each file to fetch is resolved
// with a HEAD on {endpoint}/{repo}/resolve/{commit}/{path}; a redirect to
// another host (the CDN) is not followed by the HEAD: its X-Linked-Etag,
// X-Linked-Size and X-Repo-Commit are checked against the listing and the
// Location is then fetched directly with ranged GETs. An expired presigned
// CDN URL (403) is resolved again. For ModelScope the file list comes from
// /api/v1/models/{id}/repo/files and bytes from /api/v1/models/{id}/repo.
//
// The token (HF_TOKEN) is attached by the transport only to requests to the
// configured endpoint's origin (scheme, host and port): never to the CDN,
// never over plain http after a redirect from https, never logged; user
// names and passwords in an endpoint URL are redacted from every message.
//
// # What a hub is trusted with
//
// Nothing it says names a local file unchecked. A revision must be a valid
// git ref name (CheckRevision) before any request is made. Every listing is
// checked before any work starts: file paths relative, without "." or ".."
// segments, backslashes or control characters; sizes in [0, 1 TiB]; each
// file with a 64-hex sha256 or a 40-hex git blob id (these name the partial
// files); no path twice; at most 100,000 files. Metadata requests (refs,
// tree pages, file lists, resolves) follow the retry policy of downloads
// below, each attempt limited to Options.APITimeout (body included) and each
// body to 32 MiB.
//
// # Downloads
//
// Files are split into chunks (Options.ChunkSize), each fetched with its
// own ranged GET and written at its offset into a partial file. Up to
// Options.Connections files download at once, each with one stream taking
// its chunks in order, so the bytes are hashed as they arrive. A file gets
// more streams (taking chunks from the back; their bytes are read back for
// the hash later) only while connections are free and its streams each
// receive less than Options.SplitBelow bytes/s: on a slow or capped link
// splitting multiplies the speed, on a fast one it would only add work. The
// bytes written per chunk are saved to a
// small JSON file next to the partial file every Options.SaveInterval, so a
// pull killed at any point resumes in a later process from exactly what was
// recorded. Transient failures (connection reset, truncated body, timeouts,
// stalls: fewer than Options.MinRate bytes/s over a window of
// Options.StallTimeout, 5xx, 429 with Retry-After, capped)
// are retried with exponential backoff from the byte where they stopped. A
// server that answers 200 to a ranged request is detected: the file is then
// fetched again from the start in one stream. Every file is verified (sha256
// and size for LFS and ModelScope files, the git blob sha1 for small Hub
// files) while it downloads; a mismatch deletes the partial file and fetches
// it once more before failing with an error naming the file and both hashes.
//
// # Store layout
//
// The store is one directory (config key models.dir, default
// os.UserCacheDir()/chatglm/models). Each repository has its own folder and
// each snapshot (a commit) keeps its files together:
//
//	<dir>/.locks/<org>/<name>.lock   advisory flock held by a pull or rm of this repo
//	<dir>/<org>/<name>/
//	    refs/<revision>       the snapshot id a revision resolved to ("%" and "/" in a revision are written as "%25" and "%2F")
//	    <snapshot>/<path>     the verified files of that snapshot (only complete files ever appear here)
//	    .meta/<snapshot>.json the manifest of the snapshot: source, revision, files with sizes and hashes
//	    .partial/<key>.part   a file being downloaded; <key>.json holds its chunk progress
//
// For the Hub the snapshot id is the commit sha. ModelScope has no commit id
// in its file API, so a ModelScope snapshot id is "ms-" followed by 16 hex
// digits of a sha256 over the sorted (path, sha256) list: the same content
// gives the same folder, changed content a new one.
//
// The lock lives outside the repo folder so that rm, which renames that
// folder aside before deleting it, cannot move it from under a waiting pull.
//
// Finished files are synced, moved into the snapshot folder with a rename,
// and the folder synced, so a reader never sees a partial file there and a
// final name never outlives a power loss without its bytes; refs and
// manifests are written the same way (temp file, sync, rename, sync). The
// manifest is written only after every file of a pull is in place, so it is
// the marker of a verified snapshot: a file found in a snapshot folder that
// its manifest does not list (a crash between the rename and the manifest)
// is hashed again before it is used, and fetched again if it differs. A file already present in another
// snapshot of the same repo with the same hash is hard-linked (or copied)
// instead of downloaded. Converted GGUF files are kept in the snapshot folder
// too (see GGUFPath). Before a download starts the free space of the store's
// file system is checked against the bytes still to fetch.
package hub
