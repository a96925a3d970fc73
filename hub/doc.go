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
// The token (HF_TOKEN) is attached by the transport only to requests whose
// host is the configured endpoint's host: never to the CDN, never logged.
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
// stalls with no byte for Options.StallTimeout, 5xx, 429 with Retry-After)
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
//	<dir>/<org>/<name>/
//	    .lock                 advisory flock held by a pull or rm of this repo
//	    refs/<revision>       the snapshot id a revision resolved to ("/" in a revision is written as "%2F")
//	    <snapshot>/<path>     the verified files of that snapshot (only complete files ever appear here)
//	    .meta/<snapshot>.json the manifest of the snapshot: source, revision, files with sizes and hashes
//	    .partial/<key>.part   a file being downloaded; <key>.json holds its chunk progress
//
// For the Hub the snapshot id is the commit sha. ModelScope has no commit id
// in its file API, so a ModelScope snapshot id is "ms-" followed by 16 hex
// digits of a sha256 over the sorted (path, sha256) list: the same content
// gives the same folder, changed content a new one.
//
// Finished files are moved into the snapshot folder with a rename, so a
// reader never sees a partial file there. A file already present in another
// snapshot of the same repo with the same hash is hard-linked (or copied)
// instead of downloaded. Converted GGUF files are kept in the snapshot folder
// too (see GGUFPath). Before a download starts the free space of the store's
// file system is checked against the bytes still to fetch.
package hub
