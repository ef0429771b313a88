// "Verify this claim": checks, in the browser, that every event of the claim shown on the
// page is in the ledger's signed log, trusting only the key pinned on the first visit.
//
//   1. the ledger's key (GET /v1/audit/public-key) is pinned in localStorage on first use;
//      later visits use the pinned key, and say so when the ledger presents another;
//   2. the checkpoint (GET /v1/audit/checkpoint) is a C2SP signed note: its Ed25519 signature
//      by the pinned key is checked over the note's text (WebCrypto), and its tree size and
//      root hash are read from that signed text;
//   3. each event (GET /claims/<key>/proofs?tree_size=N): SHA-256 of the RFC 8785 (JCS)
//      canonical JSON of its body is its hash, the hash the page shows, and the next
//      event's prev_hash; its RFC 9162 leaf hash and inclusion proof lead to the root.
"use strict";
(() => {
  const PIN = "claims-ledger.pinned-key";
  const GENESIS = "0".repeat(64);
  const utf8 = new TextEncoder();

  class Failure extends Error {}

  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const unhex = (text, what) => {
    if (typeof text !== "string" || !/^([0-9a-f]{2})*$/.test(text)) throw new Failure(`${what} is not lowercase hex`);
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i += 1) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
    return out;
  };
  const unbase64 = (text, what) => {
    try {
      return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    } catch {
      throw new Failure(`${what} is not base64`);
    }
  };
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));

  // RFC 8785 JSON Canonicalization Scheme. ECMAScript's JSON.stringify already writes strings
  // and numbers as JCS does (RFC 8785 §3.2.2 is defined by it); JCS adds member names sorted
  // by their UTF-16 code units, which is how JavaScript compares strings.
  const jcs = (value) => {
    if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
    if (typeof value === "number") {
      if (!Number.isFinite(value)) throw new Failure("JSON has no NaN or Infinity");
      return JSON.stringify(value);
    }
    if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`;
    if (typeof value === "object") {
      const names = Object.keys(value).sort();
      return `{${names.map((n) => `${JSON.stringify(n)}:${jcs(value[n])}`).join(",")}}`;
    }
    throw new Failure(`JSON has no ${typeof value}`);
  };

  // RFC 9162 §2.1.3.2: the root an inclusion proof leads to from a leaf.
  const half = (n) => Math.floor(n / 2);
  const node = (left, right) => sha256(concat(Uint8Array.of(1), left, right));
  const rootFromInclusion = async (index, size, leaf, path) => {
    if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index < size)) {
      throw new Failure(`leaf ${index} is not in a tree of ${size}`);
    }
    let fn = index;
    let sn = size - 1;
    let r = leaf;
    for (const p of path) {
      if (sn === 0) throw new Failure("the inclusion proof is longer than the tree allows");
      if (fn % 2 === 1 || fn === sn) {
        r = await node(p, r);
        while (fn % 2 === 0 && fn !== 0) { fn = half(fn); sn = half(sn); }
      } else {
        r = await node(r, p);
      }
      fn = half(fn);
      sn = half(sn);
    }
    if (sn !== 0) throw new Failure("the inclusion proof is shorter than the tree needs");
    return r;
  };

  // C2SP signed-note verifier key: <name>+<key ID hex>+<base64(0x01 ‖ public key)>.
  const parseVerifierKey = async (vkey) => {
    // The name and the key ID end at the first two "+"; base64 may hold "+" itself.
    const match = typeof vkey === "string" ? /^([^+]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(vkey) : null;
    if (!match) throw new Failure(`"${vkey}" is not a verifier key (<name>+<key ID hex>+<base64 key>)`);
    const [, name, idHex, b64] = match;
    const raw = unbase64(b64, "the verifier key");
    if (raw.length !== 33 || raw[0] !== 1) throw new Failure("the verifier key is not an Ed25519 key");
    const publicKey = raw.slice(1);
    const keyId = (await sha256(concat(utf8.encode(`${name}\n`), Uint8Array.of(1), publicKey))).slice(0, 4);
    if (hex(keyId) !== idHex) throw new Failure(`the verifier key's ID ${idHex} is not the one of its name and key`);
    return { name, keyId, publicKey, text: vkey };
  };

  const fingerprint = async (key) => {
    const digest = hex(await sha256(key.publicKey)).slice(0, 32);
    return `${key.name}+${hex(key.keyId)} (SHA-256 ${digest.match(/.{4}/g).join(" ")}…)`;
  };

  // A C2SP signed note: the text (ending in a newline), a blank line, "— <name> <base64>" lines.
  const parseNote = (note) => {
    const split = typeof note === "string" ? note.indexOf("\n\n") : -1;
    if (split < 0) throw new Failure("the checkpoint is not a signed note");
    const text = note.slice(0, split + 1);
    const signatures = note.slice(split + 2).split("\n").filter((l) => l !== "").map((line) => {
      const match = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!match) throw new Failure(`the checkpoint's line "${line.slice(0, 60)}" is not a signature line`);
      const raw = unbase64(match[2], "a signature");
      return { name: match[1], keyId: raw.slice(0, 4), signature: raw.slice(4) };
    });
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Failure("the checkpoint's text is not origin, size, root");
    const root = unbase64(lines[2], "the checkpoint's root hash");
    if (root.length !== 32) throw new Failure("the checkpoint's root hash is not 32 bytes");
    return { text, signatures, origin: lines[0], size: Number(lines[1]), root };
  };

  const getJson = async (url) => {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) {
      let detail = "";
      try { detail = (await response.json()).detail || ""; } catch { /* not a problem document */ }
      throw new Failure(`${url} answered ${response.status}${detail ? `: ${detail}` : ""}`);
    }
    return response.json();
  };

  const run = async (article) => {
    const result = article.querySelector("#verify-result");
    const steps = article.querySelector("#verify-steps");
    const button = article.querySelector("#verify");
    const forget = article.querySelector("#forget-key");
    const step = (text, ok) => {
      const li = document.createElement("li");
      li.className = ok ? "ok" : "failed";
      li.textContent = `${ok ? "✓" : "✗"} ${text}`;
      steps.append(li);
    };
    steps.replaceChildren();
    result.className = "";
    result.textContent = "Verifying…";
    button.disabled = true;
    const rows = new Map(Array.from(article.querySelectorAll("#history tr[data-position]"), (r) => [Number(r.dataset.position), r]));
    for (const row of rows.values()) {
      const cell = row.querySelector(".verdict");
      cell.dataset.verdict = "pending";
      cell.textContent = "…";
    }
    try {
      if (!window.isSecureContext || !crypto.subtle) {
        throw new Failure("this browser offers no WebCrypto here: open the ledger over HTTPS (or on localhost)");
      }
      const served = await getJson("/v1/audit/public-key");
      const servedKey = await parseVerifierKey(served.verifier_key);
      let pinned = localStorage.getItem(PIN);
      if (pinned === null) {
        localStorage.setItem(PIN, served.verifier_key);
        pinned = served.verifier_key;
        step(`pinned the ledger's key on this first visit: ${await fingerprint(servedKey)}`, true);
      }
      const trusted = await parseVerifierKey(pinned);
      article.querySelector("#key-fingerprint").textContent = `Key pinned by this browser: ${await fingerprint(trusted)}`;
      forget.hidden = false;
      if (pinned !== served.verifier_key && served.previous?.verifier_key !== pinned) {
        throw new Failure(`the ledger now presents the key ${await fingerprint(servedKey)}, not the key this browser pinned; `
          + "if its operators announced a new key, forget the pinned key and verify again");
      }

      const checkpoint = await getJson("/v1/audit/checkpoint");
      const note = parseNote(checkpoint.note);
      const signature = note.signatures.find((s) => s.name === trusted.name && same(s.keyId, trusted.keyId));
      if (!signature) throw new Failure(`the checkpoint carries no signature by the pinned key ${trusted.name}+${hex(trusted.keyId)}`);
      const key = await crypto.subtle.importKey("raw", trusted.publicKey, { name: "Ed25519" }, false, ["verify"]);
      const signed = await crypto.subtle.verify({ name: "Ed25519" }, key, signature.signature, utf8.encode(note.text));
      if (!signed) throw new Failure("the checkpoint's signature does not verify with the pinned key: the checkpoint was altered, or another key signed it");
      step(`checkpoint signed by the pinned key: ${note.size} events, root ${hex(note.root).slice(0, 16)}…`, true);

      const id = article.dataset.id;
      const proofs = await getJson(`/claims/${encodeURIComponent(article.dataset.key)}/proofs?tree_size=${note.size}`);
      let previous = GENESIS;
      let failures = 0;
      const seen = new Set();
      for (const [i, event] of proofs.events.entries()) {
        const problems = [];
        const body = event.body || {};
        const digest = hex(await sha256(utf8.encode(jcs(body))));
        if (digest !== event.hash) problems.push(`its body hashes to ${digest.slice(0, 12)}…, not the hash ${String(event.hash).slice(0, 12)}… served with it`);
        if (body.claim_id !== id) problems.push("it belongs to another claim");
        if (body.version !== i + 1) problems.push(`it is version ${body.version}, where version ${i + 1} was due`);
        if (body.prev_hash !== previous) problems.push("its prev_hash is not the hash of the event before it: the chain is broken");
        const row = rows.get(event.position);
        if (row && row.dataset.hash !== digest) problems.push("the page shows another hash for it");
        const leaf = await sha256(concat(Uint8Array.of(0), unhex(digest, "its hash")));
        try {
          const path = (event.audit_path || []).map((h) => unhex(h, "a proof hash"));
          const root = await rootFromInclusion(event.leaf_index, note.size, leaf, path);
          if (!same(root, note.root)) problems.push(`its inclusion proof leads to root ${hex(root).slice(0, 12)}…, not the signed checkpoint's root`);
        } catch (error) {
          problems.push(error instanceof Failure ? error.message : String(error));
        }
        previous = digest;
        seen.add(event.position);
        const label = `event ${body.version ?? "?"} (${body.type ?? "?"}, position ${event.position})`;
        if (problems.length) { failures += 1; step(`${label}: ${problems.join("; ")}`, false); } else step(`${label}: in the signed log`, true);
        if (row) {
          const cell = row.querySelector(".verdict");
          cell.dataset.verdict = problems.length ? "failed" : "ok";
          cell.textContent = problems.length ? "✗ failed" : "✓ verified";
        }
      }
      for (const [position, row] of rows) {
        if (!seen.has(position)) {
          failures += 1;
          row.querySelector(".verdict").dataset.verdict = "failed";
          row.querySelector(".verdict").textContent = "✗ missing";
          step(`the event at position ${position} shown on the page is not among the claim's events in the log`, false);
        }
      }
      if (failures) throw new Failure(`${failures} of the claim's events did not verify (see below)`);
      result.className = "ok";
      result.textContent = `Verified: all ${proofs.events.length} events of this claim are in the log of ${note.size} events signed by the pinned key.`;
    } catch (error) {
      result.className = "failed";
      result.textContent = `Verification failed: ${error instanceof Failure ? error.message : `${error.name}: ${error.message}`}`;
      if (!(error instanceof Failure)) step(String(error), false);
      for (const row of rows.values()) {
        const cell = row.querySelector(".verdict");
        if (cell.dataset.verdict === "pending") { cell.dataset.verdict = "failed"; cell.textContent = "✗ not verified"; }
      }
    } finally {
      button.disabled = false;
    }
  };

  const bind = (article) => {
    const button = article?.querySelector("#verify");
    if (!button) return;
    button.addEventListener("click", () => run(article));
    article.querySelector("#forget-key").addEventListener("click", () => {
      localStorage.removeItem(PIN);
      article.querySelector("#key-fingerprint").textContent = "The pinned key is forgotten; the next check pins the key the ledger presents then.";
      article.querySelector("#forget-key").hidden = true;
    });
    if (localStorage.getItem(PIN) !== null) article.querySelector("#forget-key").hidden = false;
    button.disabled = false;
  };
  bind(document.getElementById("claim"));
  document.addEventListener("claim:replaced", (event) => bind(event.detail));
})();
