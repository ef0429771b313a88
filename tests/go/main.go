// Command gocheck checks the ledger with Go's reference transparency-log code,
// golang.org/x/mod/sumdb/tlog and golang.org/x/mod/sumdb/note, the code Go's checksum
// database and its clients run: an independent implementation of everything the
// ledger's tamper evidence promises (docs/auditing.md). tests/gocheck.py builds and runs it.
//
//	gocheck note-verify <verifier key> < note
//	    note.Open with that key: prints the verified text; exits 1 when it does not verify.
//	gocheck tlog-check --url URL --token T [--vkey KEY] [--records 0,1,255] [--old 1,256]
//	    reads the checkpoint (GET /checkpoint, verified with --vkey; without it the tree size
//	    and root of GET /v1/audit/checkpoint), then the tiles with tlog.TileHashReader, and
//	    checks TreeHash against the root, every entry bundle against the level-0 tiles,
//	    ProveRecord/CheckRecord for the sample records, ProveTree/CheckTree from each older
//	    size, and the ledger's own RFC 9162 proofs (GET /v1/audit/proofs/...) with
//	    tlog.CheckRecord and tlog.CheckTree. Prints one line per check; exits 1 on the first
//	    that fails.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8 // C2SP tlog-tiles

func main() {
	if len(os.Args) < 2 {
		fail("usage: gocheck note-verify <vkey> < note | gocheck tlog-check --url URL --token T [...]")
	}
	switch os.Args[1] {
	case "note-verify":
		if len(os.Args) != 3 {
			fail("usage: gocheck note-verify <verifier key> < note")
		}
		msg, err := io.ReadAll(os.Stdin)
		check(err, "reading the note")
		text, err := openNote(os.Args[2], msg)
		check(err, "note.Open")
		fmt.Print(text)
	case "tlog-check":
		tlogCheck(os.Args[2:])
	default:
		fail("unknown subcommand " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "FAIL:", msg)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail(fmt.Sprintf("%s: %v", what, err))
	}
}

func openNote(vkey string, msg []byte) (string, error) {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return "", fmt.Errorf("the verifier key: %w", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return "", err
	}
	return n.Text, nil
}

type client struct {
	base, token string
	http        *http.Client
}

func (c *client) get(path string, auth bool) ([]byte, *http.Response, error) {
	req, err := http.NewRequest("GET", c.base+path, nil)
	if err != nil {
		return nil, nil, err
	}
	if auth && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != 200 {
		return nil, resp, fmt.Errorf("GET %s: %s: %.300s", path, resp.Status, body)
	}
	return body, resp, nil
}

func (c *client) getJSON(path string, v interface{}) error {
	body, _, err := c.get(path, true)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// tiles reads C2SP tiles: tlog's own paths (tile/H/L/N[.p/W]) without the height element.
type tiles struct {
	c       *client
	fetched []string
}

func (t *tiles) Height() int { return tileHeight }

func c2spPath(tile tlog.Tile) string {
	return "/" + strings.Replace(tile.Path(), fmt.Sprintf("tile/%d/", tileHeight), "tile/", 1)
}

func (t *tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, tile := range ts {
		path := c2spPath(tile)
		body, resp, err := t.c.get(path, false)
		if err != nil {
			return nil, err
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
			return nil, fmt.Errorf("%s: Content-Type %q", path, ct)
		}
		if len(body) != tile.W*tlog.HashSize {
			return nil, fmt.Errorf("%s: %d bytes, want %d", path, len(body), tile.W*tlog.HashSize)
		}
		t.fetched = append(t.fetched, path)
		out[i] = body
	}
	return out, nil
}

func (t *tiles) SaveTiles([]tlog.Tile, [][]byte) {}

// entries reads entry bundle n of width w: uint16-length-prefixed entries.
func (c *client) entries(n int64, w int) ([][]byte, error) {
	path := c2spPath(tlog.Tile{H: tileHeight, L: 0, N: n, W: w})
	path = strings.Replace(path, "/tile/0/", "/tile/entries/", 1)
	body, _, err := c.get(path, false)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for len(body) > 0 {
		if len(body) < 2 {
			return nil, fmt.Errorf("%s: a truncated length", path)
		}
		size := int(binary.BigEndian.Uint16(body))
		if len(body) < 2+size {
			return nil, fmt.Errorf("%s: a truncated entry", path)
		}
		out = append(out, body[2:2+size])
		body = body[2+size:]
	}
	if len(out) != w {
		return nil, fmt.Errorf("%s: %d entries, want %d", path, len(out), w)
	}
	return out, nil
}

func ints(s string) []int64 {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseInt(f, 10, 64)
		check(err, "a number list")
		out = append(out, n)
	}
	return out
}

func hashes(hexes []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(hexes))
	for i, h := range hexes {
		raw, err := hex.DecodeString(h)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("not a hex hash: %q", h)
		}
		copy(out[i][:], raw)
	}
	return out, nil
}

// readCheckpoint: the tree of the signed note at /checkpoint (C2SP tlog-checkpoint), or
// without a key the size and root of the JSON checkpoint.
func readCheckpoint(c *client, vkey string) (tlog.Tree, string) {
	if vkey != "" {
		msg, _, err := c.get("/checkpoint", false)
		check(err, "the checkpoint")
		text, err := openNote(vkey, msg)
		check(err, "note.Open of /checkpoint")
		lines := strings.Split(text, "\n")
		if len(lines) < 4 || lines[len(lines)-1] != "" {
			fail(fmt.Sprintf("the checkpoint text is not origin, size, root and a final newline: %q", text))
		}
		size, err := strconv.ParseInt(lines[1], 10, 64)
		check(err, "the checkpoint's tree size")
		root, err := base64.StdEncoding.DecodeString(lines[2])
		if err != nil || len(root) != tlog.HashSize {
			fail(fmt.Sprintf("the checkpoint's root hash %q is not base64 of 32 bytes", lines[2]))
		}
		var tree tlog.Tree
		tree.N = size
		copy(tree.Hash[:], root)
		return tree, "signed note of " + lines[0]
	}
	var cp struct {
		TreeSize int64  `json:"tree_size"`
		RootHash string `json:"root_hash"`
	}
	check(c.getJSON("/v1/audit/checkpoint", &cp), "the JSON checkpoint")
	root, err := hashes([]string{cp.RootHash})
	check(err, "the JSON checkpoint's root")
	return tlog.Tree{N: cp.TreeSize, Hash: root[0]}, "JSON checkpoint (signature not checked here)"
}

func tlogCheck(args []string) {
	flags := flag.NewFlagSet("tlog-check", flag.ExitOnError)
	url := flags.String("url", "", "the ledger's base URL")
	token := flags.String("token", "", "an auditor token (the feed and the proofs)")
	vkey := flags.String("vkey", "", "the log's verifier key: read and verify /checkpoint")
	records := flags.String("records", "0,1", "leaf indexes to prove")
	olds := flags.String("old", "1", "older tree sizes to prove consistency from")
	check(flags.Parse(args), "flags")
	if *url == "" {
		fail("--url is required")
	}
	c := &client{base: strings.TrimRight(*url, "/"), token: *token, http: &http.Client{Timeout: 30 * time.Second}}

	tree, source := readCheckpoint(c, *vkey)
	fmt.Printf("checkpoint: %s: %d leaves, root %s\n", source, tree.N, tree.Hash)
	if tree.N == 0 {
		fail("the tree is empty: nothing to check")
	}
	tr := &tiles{c: c}
	reader := tlog.TileHashReader(tree, tr)

	th, err := tlog.TreeHash(tree.N, reader)
	check(err, "TreeHash over the tiles")
	if th != tree.Hash {
		fail(fmt.Sprintf("TreeHash over the tiles is %s, the checkpoint says %s", th, tree.Hash))
	}
	fmt.Printf("TreeHash(%d) over the tiles equals the checkpoint's root\n", tree.N)

	// Every entry bundle against the level-0 tile hashes TileHashReader authenticated.
	leafHashes := make([]tlog.Hash, 0, tree.N)
	for n := int64(0); n*256 < tree.N; n++ {
		w := 256
		if rest := tree.N - n*256; rest < 256 {
			w = int(rest)
		}
		bundle, err := c.entries(n, w)
		check(err, "an entry bundle")
		indexes := make([]int64, w)
		for i := range indexes {
			indexes[i] = tlog.StoredHashIndex(0, n*256+int64(i))
		}
		stored, err := reader.ReadHashes(indexes)
		check(err, "ReadHashes of level-0 tiles")
		for i, entry := range bundle {
			if tlog.RecordHash(entry) != stored[i] {
				fail(fmt.Sprintf("entry %d of bundle %d does not hash to the level-0 tile's leaf", i, n))
			}
			leafHashes = append(leafHashes, stored[i])
		}
	}
	fmt.Printf("entry bundles: all %d entries hash to the level-0 tiles' leaves\n", len(leafHashes))

	// The root again from the entries alone, through tlog's own stored-hash layout: the
	// tile reader of x/mod v0.7.0 authenticates a tile against its parent only when it
	// comes after as many tiles as the tree has subtrees, so this does not rest on it.
	var stored []tlog.Hash
	memory := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x >= int64(len(stored)) {
				return nil, fmt.Errorf("hash %d not stored", x)
			}
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, leaf := range leafHashes {
		more, err := tlog.StoredHashesForRecordHash(int64(i), leaf, memory)
		check(err, "StoredHashesForRecordHash")
		stored = append(stored, more...)
	}
	recomputed, err := tlog.TreeHash(tree.N, memory)
	check(err, "TreeHash of the entries")
	if recomputed != tree.Hash {
		fail(fmt.Sprintf("the root of the %d entries is %s, the checkpoint says %s", tree.N, recomputed, tree.Hash))
	}
	fmt.Printf("TreeHash(%d) recomputed from the entries alone equals the checkpoint's root\n", tree.N)

	// The feed gives each leaf's event position, for the ledger's own proofs.
	type item struct {
		Position int64  `json:"position"`
		Hash     string `json:"hash"`
	}
	var feed []item
	for after := int64(0); int64(len(feed)) < tree.N; {
		var page struct {
			Items     []item `json:"items"`
			NextAfter int64  `json:"next_after"`
		}
		check(c.getJSON(fmt.Sprintf("/v1/events?after=%d&limit=10000", after), &page), "the feed")
		if len(page.Items) == 0 {
			fail(fmt.Sprintf("the feed ends after %d events, the tree holds %d", len(feed), tree.N))
		}
		feed = append(feed, page.Items...)
		after = page.NextAfter
	}
	for i := int64(0); i < tree.N; i++ {
		raw, err := hex.DecodeString(feed[i].Hash)
		check(err, "a feed hash")
		if tlog.RecordHash(raw) != leafHashes[i] {
			fail(fmt.Sprintf("the feed's event %d (position %d) is not the tiles' leaf %d", i, feed[i].Position, i))
		}
	}
	fmt.Printf("feed: its first %d events are the tiles' leaves\n", tree.N)

	for _, i := range ints(*records) {
		if i >= tree.N {
			fail(fmt.Sprintf("record %d is outside the tree of %d", i, tree.N))
		}
		p, err := tlog.ProveRecord(tree.N, i, reader)
		check(err, "ProveRecord")
		check(tlog.CheckRecord(p, tree.N, tree.Hash, i, leafHashes[i]), fmt.Sprintf("CheckRecord of record %d", i))
		var ours struct {
			LeafIndex int64    `json:"leaf_index"`
			TreeSize  int64    `json:"tree_size"`
			AuditPath []string `json:"audit_path"`
		}
		check(c.getJSON(fmt.Sprintf("/v1/audit/proofs/inclusion?position=%d&tree_size=%d", feed[i].Position, tree.N), &ours),
			"the ledger's inclusion proof")
		path, err := hashes(ours.AuditPath)
		check(err, "the ledger's inclusion proof")
		if ours.LeafIndex != i || ours.TreeSize != tree.N {
			fail(fmt.Sprintf("the ledger proved leaf %d in %d, not %d in %d", ours.LeafIndex, ours.TreeSize, i, tree.N))
		}
		check(tlog.CheckRecord(path, tree.N, tree.Hash, i, leafHashes[i]),
			fmt.Sprintf("CheckRecord of the ledger's RFC 9162 inclusion proof of record %d", i))
		if !equal(path, p) {
			fail(fmt.Sprintf("the ledger's inclusion proof of record %d differs from tlog.ProveRecord's", i))
		}
		fmt.Printf("record %d (position %d): ProveRecord/CheckRecord hold; the ledger's inclusion proof checks and equals tlog's\n",
			i, feed[i].Position)
	}

	for _, old := range ints(*olds) {
		if old < 1 || old > tree.N {
			fail(fmt.Sprintf("older size %d is outside 1..%d", old, tree.N))
		}
		oldHash, err := tlog.TreeHash(old, reader)
		check(err, "TreeHash of the older tree")
		p, err := tlog.ProveTree(tree.N, old, reader)
		check(err, "ProveTree")
		check(tlog.CheckTree(p, tree.N, tree.Hash, old, oldHash), fmt.Sprintf("CheckTree from %d", old))
		var ours struct {
			Proof []string `json:"proof"`
		}
		check(c.getJSON(fmt.Sprintf("/v1/audit/proofs/consistency?from_size=%d&to_size=%d", old, tree.N), &ours),
			"the ledger's consistency proof")
		proof, err := hashes(ours.Proof)
		check(err, "the ledger's consistency proof")
		check(tlog.CheckTree(proof, tree.N, tree.Hash, old, oldHash),
			fmt.Sprintf("CheckTree of the ledger's RFC 9162 consistency proof from %d", old))
		if !equal(proof, p) {
			fail(fmt.Sprintf("the ledger's consistency proof from %d differs from tlog.ProveTree's", old))
		}
		fmt.Printf("tree %d -> %d: ProveTree/CheckTree hold; the ledger's consistency proof checks and equals tlog's\n",
			old, tree.N)
	}

	// A tampered proof must fail: the check is not vacuous.
	if tree.N > 1 {
		p, err := tlog.ProveRecord(tree.N, 0, reader)
		check(err, "ProveRecord")
		p[0][0] ^= 1
		if tlog.CheckRecord(p, tree.N, tree.Hash, 0, leafHashes[0]) == nil {
			fail("CheckRecord accepted a proof with a flipped bit")
		}
	}
	for _, path := range tr.fetched {
		fmt.Println("tile read:", path)
	}
	fmt.Println("all checks hold")
}

func equal(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i][:], b[i][:]) {
			return false
		}
	}
	return true
}
