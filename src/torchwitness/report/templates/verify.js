// Re-verifies the embedded evidence in the browser with WebCrypto only: the Ed25519 signature of the C2SP
// checkpoint, then each embedded record's RFC 9162 inclusion proof against the signed root, then that every
// statement citing a proven record states the number that record holds. Any failure shows "not verified".
(async () => {
  const status = document.getElementById("tw-verify-status");
  const detail = document.getElementById("tw-verify-detail");
  const enc = new TextEncoder();
  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
  const eq = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
  const sha256 = async (...parts) => {
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { all.set(p, o); o += p.length; }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  };
  const LEAF = Uint8Array.of(0), NODE = Uint8Array.of(1);
  const show = (ok, lines) => {
    status.textContent = ok ? "verified" : "not verified";
    status.className = ok ? "ok" : "bad";
    detail.textContent = lines.join("\n");
  };
  // RFC 9162 section 2.1.3.2: the root implied by a leaf, its index, the tree size and the audit path.
  async function rootFromPath(index, size, leaf, path) {
    if (!(index >= 0 && index < size)) throw new Error(`index ${index} outside tree of size ${size}`);
    let fn = index, sn = size - 1, r = leaf;
    for (const p of path) {
      if (p.length !== 32) throw new Error("proof hash is not 32 bytes");
      if (sn === 0) throw new Error("proof too long");
      if ((fn & 1) || fn === sn) {
        r = await sha256(NODE, p, r);
        if (!(fn & 1)) { while (fn && !(fn & 1)) { fn >>= 1; sn >>= 1; } }
      } else {
        r = await sha256(NODE, r, p);
      }
      fn >>= 1; sn >>= 1;
    }
    if (sn !== 0) throw new Error("proof too short");
    return r;
  }
  const num = (v) => {
    while (v && typeof v === "object" && "$array" in v) v = v.$array.data;
    while (Array.isArray(v) && v.length === 1) v = v[0];
    return typeof v === "number" ? v : null;
  };
  const field = (data, path) => path.split(".").reduce((n, k) => (n == null ? null : n[k]), data);
  const lines = [];
  try {
    const ev = JSON.parse(document.getElementById("tw-evidence").textContent);
    if (!ev.checkpoint || !ev.verifier_key || !ev.proofs || !ev.proofs.length) {
      throw new Error("no signed checkpoint or inclusion proofs are embedded");
    }
    // 1. Verifier key NAME+KEYID+BASE64(0x01 || key): check its key ID, import the Ed25519 key.
    const i = ev.verifier_key.indexOf("+"), j = ev.verifier_key.indexOf("+", i + 1);
    const name = ev.verifier_key.slice(0, i), keyId = hex(ev.verifier_key.slice(i + 1, j));
    const blob = b64(ev.verifier_key.slice(j + 1));
    if (blob.length !== 33 || blob[0] !== 1) throw new Error("verifier key is not an Ed25519 signed-note key");
    const raw = blob.slice(1);
    const expectId = (await sha256(enc.encode(name + "\n"), Uint8Array.of(1), raw)).slice(0, 4);
    if (!eq(expectId, keyId)) throw new Error("verifier key ID does not match its name and key");
    const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    // 2. Checkpoint: body (origin, size, base64 root), blank line, signature lines "— NAME base64(id||sig)".
    const cut = ev.checkpoint.indexOf("\n\n");
    if (cut < 0) throw new Error("checkpoint is not a signed note");
    const body = ev.checkpoint.slice(0, cut + 1);
    const [origin, sizeText, rootText] = body.split("\n");
    const size = Number(sizeText), root = b64(rootText);
    let signed = false;
    for (const line of ev.checkpoint.slice(cut + 2).split("\n")) {
      if (!line.startsWith("\u2014 ")) continue;
      const [who, sigText] = line.slice(2).split(" ");
      const sig = b64(sigText);
      if (who !== name || !eq(sig.slice(0, 4), keyId)) continue;
      signed = await crypto.subtle.verify({ name: "Ed25519" }, key, sig.slice(4), enc.encode(body));
      if (signed) break;
    }
    if (!signed) throw new Error(`checkpoint signature by ${name} does not verify`);
    const rootHex = "sha256:" + [...root].map((b) => b.toString(16).padStart(2, "0")).join("");
    if (ev.root !== rootHex) throw new Error(`the root shown on this page is not the signed root ${rootHex}`);
    lines.push(`checkpoint ${origin} size ${size} root ${rootHex}: Ed25519 signature by ${name} verifies`);
    // 3. Each inclusion proof leads from SHA-256(0x00 || record) to the signed root.
    const statements = [...document.querySelectorAll("[data-seq][data-field][data-value]")];
    for (const p of ev.proofs) {
      const rec = JSON.parse(p.record);
      if (rec.seq !== p.seq) throw new Error(`record claims seq ${rec.seq}, proof is for ${p.seq}`);
      if (p.tree_size !== size) throw new Error(`proof for seq ${p.seq} is for another tree size`);
      const got = await rootFromPath(p.seq, size, await sha256(LEAF, enc.encode(p.record)), p.path.map(hex));
      if (!eq(got, root)) throw new Error(`record seq ${p.seq} is not included in the signed tree`);
      // 4. Statements citing this record must state what it holds.
      for (const el of statements) {
        if (Number(el.dataset.seq) !== p.seq) continue;
        const v = num(field(rec.data, el.dataset.field)), claimed = Number(el.dataset.value);
        if (v === null || Math.abs(v - claimed) > 1e-9 * Math.max(1, Math.abs(v))) {
          throw new Error(`statement citing seq ${p.seq} says ${claimed}, the record holds ${v}`);
        }
      }
    }
    lines.push(`${ev.proofs.length} inclusion proofs (RFC 9162) verify against the signed root`);
    show(true, lines);
  } catch (e) {
    lines.push(String(e && e.message ? e.message : e));
    show(false, lines);
  }
})();
