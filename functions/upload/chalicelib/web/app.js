// The imagepipe demo page: each chosen or dropped image is checked against GET /limits, gets
// a presigned upload from POST /uploads, goes straight from the browser to S3 (one PUT, or
// multipart parts in parallel above the threshold), is completed, and its status is polled
// until its variants (or the reason it failed) can be shown: one responsive <img srcset sizes>
// over the stable variant URLs, and a download link per variant. The server stays the
// authority: the checks here only spare the user a round trip. Cancel wins at every stage:
// while the page waits for an upload URL, while it uploads, while it completes or polls.
"use strict";

(() => {
  const PART_CONCURRENCY = 4;     // parts in flight per file
  const SEND_ATTEMPTS = 3;        // tries per PUT (part or whole file) before giving up on it
  const RETRY_DELAY_MS = 400;     // doubles per attempt
  const COMPLETE_ATTEMPTS = 5;    // for 503 broker_unavailable
  const POLL_FIRST_MS = 400;
  const POLL_MAX_MS = 2000;
  const POLL_FOR_MS = 5 * 60 * 1000;
  // The result fills the list's width up to 40rem: the browser picks the srcset candidate.
  const RESULT_SIZES = "(max-width: 42rem) calc(100vw - 2rem), 40rem";
  const EXTENSION_TYPES = {
    jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp",
    gif: "image/gif", heic: "image/heic", avif: "image/avif", svg: "image/svg+xml",
  };

  const apiUrl = (path) => new URL(path, document.baseURI).href;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // On a stage with auth the page gets its bearer token in the URL fragment (#token=...), which
  // a browser never sends to a server: it is kept for this tab only and taken out of the
  // address bar, then sent to the API (never to S3) as the Authorization header.
  const TOKEN_KEY = "imagepipe.token";
  function readToken() {
    const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromFragment) {
      try {
        sessionStorage.setItem(TOKEN_KEY, fromFragment);
      } catch (err) { /* storage off: the token lives as long as the page */ }
      history.replaceState(null, "", location.pathname + location.search);
      return fromFragment;
    }
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (err) {
      return null;
    }
  }
  const token = readToken();
  const authHeader = token ? { Authorization: `Bearer ${token}` } : {};

  // --- errors: every failure the user sees has a code and a message -----------------------------
  class UploadError extends Error {
    constructor(code, message, { status = 0, retryable = false, retryAfter = 0 } = {}) {
      super(message);
      this.code = code;
      this.status = status;
      this.retryable = retryable;
      this.retryAfter = retryAfter;
    }
  }

  const cancelledError = () => new UploadError("cancelled", "the upload was cancelled");

  // ``promise``, or a "cancelled" rejection as soon as ``signal`` aborts, whichever is first.
  function unlessAborted(promise, signal) {
    if (!signal) return promise;
    return new Promise((resolve, reject) => {
      if (signal.aborted) reject(cancelledError());
      signal.addEventListener("abort", () => reject(cancelledError()), { once: true });
      promise.then(resolve, reject);
    });
  }

  async function callApi(method, path, body) {
    let response;
    try {
      response = await fetch(apiUrl(path), {
        method,
        headers: body === undefined ? { Accept: "application/json", ...authHeader }
          : { Accept: "application/json", "Content-Type": "application/json", ...authHeader },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new UploadError("api_unreachable", `could not reach the upload API (${err.message})`,
        { retryable: true });
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    if (!response.ok) {
      const error = (payload && payload.error) || {};
      throw new UploadError(error.code || `http_${response.status}`,
        error.message || `the upload API answered ${response.status}`, {
          status: response.status,
          retryable: response.status >= 500,
          retryAfter: Number(response.headers.get("Retry-After")) || 0,
        });
    }
    return payload;
  }

  // --- limits ------------------------------------------------------------------------------------
  const FALLBACK_LIMITS = null; // without /limits the server does every check itself

  async function loadLimits() {
    const line = document.getElementById("limits");
    try {
      const limits = await callApi("GET", "limits");
      const types = limits.allowed_types.map((t) => t.replace("image/", "").toUpperCase());
      line.textContent = `${types.join(", ")} images up to ${formatBytes(limits.max_upload_bytes)} each.`;
      // The picker offers what this stage takes (the HTML's list is only the fallback).
      document.getElementById("files").accept = limits.allowed_types.join(",");
      return limits;
    } catch (err) {
      line.textContent = "";
      const notice = document.getElementById("notice");
      notice.textContent = `Could not load the upload limits (${err.code}: ${err.message}); ` +
        "the server still checks each file.";
      notice.hidden = false;
      return FALLBACK_LIMITS;
    }
  }

  function fileType(file) {
    if (file.type) return file.type.toLowerCase();
    const extension = (file.name.split(".").pop() || "").toLowerCase();
    return EXTENSION_TYPES[extension] || "application/octet-stream";
  }

  // The same checks as the server's, before asking it for a URL.
  function clientCheck(file, type, limits) {
    if (!limits) return null;
    if (!limits.allowed_types.includes(type)) {
      const allowed = limits.allowed_types.join(", ");
      return new UploadError("unsupported_type", `${type} is not an allowed type (${allowed})`);
    }
    if (file.size === 0) return new UploadError("empty_upload", "the file is empty");
    if (file.size > limits.max_upload_bytes) {
      return new UploadError("too_large", `${formatBytes(file.size)} is over the limit of ` +
        `${formatBytes(limits.max_upload_bytes)}`);
    }
    return null;
  }

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  }

  // --- S3 ----------------------------------------------------------------------------------------
  // One PUT through XMLHttpRequest (fetch has no upload progress). Resolves with the response's
  // ETag; a network-level failure (refused preflight, dropped connection) has status 0 and no
  // detail: the browser hides which one it was.
  function putToS3(url, body, headers, onProgress, active) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      active.add(xhr);
      const done = () => active.delete(xhr);
      xhr.open("PUT", url);
      for (const [name, value] of Object.entries(headers || {})) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => { if (event.lengthComputable) onProgress(event.loaded); };
      xhr.onload = () => {
        done();
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve({ etag: xhr.getResponseHeader("ETag") });
          return;
        }
        const s3Code = (/<Code>([^<]+)<\/Code>/.exec(xhr.responseText || "") || [])[1];
        reject(new UploadError(s3Code === "AccessDenied" || xhr.status === 403 ? "s3_refused" : "s3_error",
          `S3 answered ${xhr.status}${s3Code ? ` ${s3Code}` : ""}`,
          { status: xhr.status, retryable: xhr.status >= 500 || xhr.status === 403 }));
      };
      xhr.onerror = () => {
        done();
        reject(new UploadError("network_error", "the connection to S3 failed", { retryable: true }));
      };
      xhr.onabort = () => {
        done();
        reject(new UploadError("cancelled", "the upload was cancelled"));
      };
      xhr.send(body);
    });
  }

  // After a PUT failed with no response: when S3 still answers a no-cors request, the network is
  // fine and the browser refused the response by CORS; otherwise the connection is down.
  async function explainNetworkFailure(url) {
    const s3 = new URL(url);
    try {
      await fetch(`${s3.origin}/`, { mode: "no-cors", cache: "no-store" });
    } catch (err) {
      return new UploadError("s3_unreachable",
        `could not reach S3 at ${s3.origin}: the connection dropped or you are offline`,
        { retryable: true });
    }
    return new UploadError("cors_refused",
      `S3 at ${s3.origin} refused this page's origin ${location.origin} (CORS): the stage's ` +
      "allowed_origins must list it");
  }

  // --- one file ----------------------------------------------------------------------------------
  class Upload {
    constructor(file, limits, list) {
      this.file = file;
      this.limits = limits;
      this.type = fileType(file);
      this.active = new Set();
      // Aborted by Cancel: every wait of this upload (API calls, retries, polling) ends with it.
      this.aborter = new AbortController();
      this.uploadId = null;
      this.element = document.getElementById("upload-template").content.firstElementChild.cloneNode(true);
      this.element.dataset.filename = file.name;
      this.$(".filename").textContent = file.name;
      this.$(".filesize").textContent = formatBytes(file.size);
      this.$(".progress").setAttribute("aria-label", `Upload progress of ${file.name}`);
      this.$(".cancel").addEventListener("click", () => this.cancel());
      this.showPreview();
      list.append(this.element);
    }

    get cancelled() { return this.aborter.signal.aborted; }

    // The file itself, from memory, while it uploads (an object URL: nothing leaves the page).
    showPreview() {
      if (!this.type.startsWith("image/")) return;
      this.previewUrl = URL.createObjectURL(this.file);
      const preview = this.$(".preview");
      preview.src = this.previewUrl;
      preview.alt = `${this.file.name} (local preview)`;
      preview.hidden = false;
    }

    hidePreview() {
      if (!this.previewUrl) return;
      this.$(".preview").hidden = true;
      this.$(".preview").removeAttribute("src");
      URL.revokeObjectURL(this.previewUrl);
      this.previewUrl = null;
    }

    // An API call that stops waiting when the upload is cancelled.
    api(method, path, body) {
      if (this.cancelled) return Promise.reject(cancelledError());
      return unlessAborted(callApi(method, path, body), this.aborter.signal);
    }

    $(selector) { return this.element.querySelector(selector); }

    setState(state, text) {
      this.element.dataset.state = state;
      this.$(".status").textContent = `${this.file.name}: ${text}`;
      this.$(".cancel").hidden = !["requesting", "uploading", "paused"].includes(state);
    }

    showError(error, where) {
      this.element.dataset.errorCode = error.code;
      this.$(".error-code").textContent = error.code;
      this.$(".error-message").textContent = where ? `${error.message} (${where})` : error.message;
      this.$(".error").hidden = false;
      this.$(".progress").hidden = true;
    }

    setProgress(loaded) {
      const percent = this.file.size ? Math.min(100, Math.round((loaded / this.file.size) * 100)) : 100;
      this.$(".progress").value = percent;
      this.$(".progress").setAttribute("aria-valuetext", `${percent}%`);
    }

    async run() {
      try {
        const problem = clientCheck(this.file, this.type, this.limits);
        if (problem) {
          this.setState("rejected", "not uploaded");
          this.showError(problem, "checked in your browser");
          this.hidePreview();
          return;
        }
        this.setState("requesting", "asking for an upload URL…");
        const multipart = Boolean(this.limits) && this.file.size > this.limits.multipart_threshold_bytes;
        // The request itself is left to finish when Cancel aborts the wait: the server may have
        // made the upload already, and only its answer names it, so the page can DELETE it.
        const creating = callApi("POST", "uploads", {
          filename: this.file.name, content_type: this.type, size: this.file.size,
          method: multipart ? "MULTIPART" : "PUT",
        });
        let created;
        try {
          created = await unlessAborted(creating, this.aborter.signal);
        } catch (err) {
          if (this.cancelled) {
            creating.then((late) => this.cancelOnServer(late.upload_id), () => {});
            return;
          }
          this.setState("rejected", "not uploaded");
          this.showError(err, "refused by the server");
          this.hidePreview();
          return;
        }
        this.uploadId = created.upload_id;
        this.element.dataset.uploadId = created.upload_id;
        this.statusUrl = new URL(created.status_url, location.href).href;
        const parts = created.upload.method === "MULTIPART"
          ? await this.sendMultipart(created.upload)
          : await this.sendWhole(created.upload);
        if (this.cancelled) throw cancelledError();
        await this.complete(parts);
        await this.poll();
      } catch (err) {
        if (this.cancelled) return;
        this.hidePreview();
        const error = err instanceof UploadError ? err
          : new UploadError("client_error", err && err.message ? err.message : String(err));
        this.setState("failed", "failed");
        this.showError(error);
      }
    }

    async sendWhole(upload) {
      this.setState("uploading", "uploading…");
      await this.withRetries(upload.url, (onProgress) =>
        putToS3(upload.url, this.file, upload.headers, onProgress, this.active),
      (loaded) => this.setProgress(loaded));
      this.setProgress(this.file.size);
      return null;
    }

    // Tries one PUT up to SEND_ATTEMPTS times; a failure with no response is explained once the
    // tries are spent (CORS refusal vs. connection down).
    async withRetries(url, send, onProgress) {
      let last;
      for (let attempt = 1; attempt <= SEND_ATTEMPTS; attempt += 1) {
        if (this.cancelled) throw new UploadError("cancelled", "the upload was cancelled");
        try {
          return await send(onProgress);
        } catch (err) {
          last = err;
          onProgress(0);
          if (!err.retryable || this.cancelled) break;
          if (attempt < SEND_ATTEMPTS) {
            await unlessAborted(sleep(RETRY_DELAY_MS * 2 ** (attempt - 1)), this.aborter.signal);
          }
        }
      }
      if (last.code === "network_error") throw await explainNetworkFailure(url);
      throw last;
    }

    // --- multipart: parts in parallel, each retried; resumable through POST /uploads/{id}/parts
    async sendMultipart(upload) {
      this.partBytes = upload.part_bytes;
      this.urls = new Map(upload.parts.map((p) => [p.part_number, p.url]));
      this.etags = new Map();
      this.partLoaded = new Map();
      this.setState("uploading", `uploading in ${upload.part_count} parts…`);
      for (;;) {
        try {
          await this.sendParts();
          break;
        } catch (err) {
          if (!err.retryable || this.cancelled) throw err;
          await this.pause(err);
          await this.refreshParts();
        }
      }
      return this.partList();
    }

    // In part order, as CompleteMultipartUpload requires.
    partList() {
      return [...this.etags.entries()].sort((a, b) => a[0] - b[0])
        .map(([partNumber, etag]) => ({ part_number: partNumber, etag }));
    }

    async sendParts() {
      const todo = [...this.urls.keys()].filter((n) => !this.etags.has(n)).sort((a, b) => a - b);
      let failure = null;
      const worker = async () => {
        while (todo.length && !failure && !this.cancelled) {
          const partNumber = todo.shift();
          try {
            await this.sendPart(partNumber);
          } catch (err) {
            failure = failure || err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(PART_CONCURRENCY, todo.length) }, worker));
      if (this.cancelled) throw new UploadError("cancelled", "the upload was cancelled");
      if (failure) throw failure;
    }

    async sendPart(partNumber) {
      const start = (partNumber - 1) * this.partBytes;
      const end = Math.min(partNumber * this.partBytes, this.file.size);
      const url = this.urls.get(partNumber);
      const { etag } = await this.withRetries(url, (onProgress) =>
        putToS3(url, this.file.slice(start, end), {}, onProgress, this.active),
      (loaded) => { this.partLoaded.set(partNumber, loaded); this.showPartProgress(); });
      if (!etag) {
        throw new UploadError("etag_hidden", "S3 accepted the part but did not expose its ETag " +
          "header to this page: the bucket's CORS rule must list ETag in ExposeHeaders");
      }
      this.etags.set(partNumber, etag);
      this.partLoaded.set(partNumber, end - start);
      this.showPartProgress();
    }

    showPartProgress() {
      let loaded = 0;
      for (const bytes of this.partLoaded.values()) loaded += bytes;
      this.setProgress(loaded);
    }

    // Waits for the user's "Resume" or for the browser to come back online.
    pause(err) {
      this.setState("paused", `paused after ${this.etags.size} of ${this.urls.size} parts`);
      this.showError(err, "resume continues with the parts S3 does not have yet");
      const resume = this.$(".resume");
      resume.hidden = false;
      return new Promise((resolve) => {
        const go = () => {
          resume.removeEventListener("click", go);
          window.removeEventListener("online", go);
          resume.hidden = true;
          this.$(".error").hidden = true;
          this.$(".progress").hidden = false;
          this.setState("uploading", "resuming…");
          resolve();
        };
        resume.addEventListener("click", go);
        window.addEventListener("online", go);
        this.resumeNow = go;
      });
    }

    // What S3 has already, and fresh URLs for the rest.
    async refreshParts() {
      const answer = await this.api("POST", `uploads/${this.uploadId}/parts`, {});
      for (const part of answer.uploaded) {
        this.etags.set(part.part_number, part.etag);
        this.partLoaded.set(part.part_number, part.size);
      }
      for (const part of answer.parts) this.urls.set(part.part_number, part.url);
      this.showPartProgress();
    }

    // --- complete and status
    async complete(parts) {
      this.setState("completing", "uploaded; verifying…");
      for (let attempt = 1; ; attempt += 1) {
        try {
          await this.api("POST", `uploads/${this.uploadId}/complete`, parts ? { parts } : undefined);
          return;
        } catch (err) {
          if (err.code === "parts_missing" && parts) {
            await this.refreshParts();
            await this.sendParts();
            parts = this.partList();
            continue;
          }
          if (!err.retryable || attempt >= COMPLETE_ATTEMPTS) throw err;
          await unlessAborted(sleep((err.retryAfter || 1) * 1000), this.aborter.signal);
        }
      }
    }

    async poll() {
      const started = Date.now();
      let wait = POLL_FIRST_MS;
      for (;;) {
        const status = await this.api("GET", this.statusUrl);
        if (status.status === "done") {
          this.setState("done", `done: ${status.variants.length} versions`);
          this.$(".progress").hidden = true;
          this.showResult(status);
          return;
        }
        if (status.status === "failed") {
          this.hidePreview();
          this.setState("failed", "failed");
          this.showError(status.error || new UploadError("failed", "the upload failed"));
          return;
        }
        this.setState(status.status, `${status.status}…`);
        if (Date.now() - started > POLL_FOR_MS) {
          throw new UploadError("still_processing", "still processing; reload later to check");
        }
        await unlessAborted(sleep(wait), this.aborter.signal);
        wait = Math.min(POLL_MAX_MS, wait * 1.5);
      }
    }

    // The result as one responsive image over the width-based variants (the browser picks the
    // candidate for its layout width and pixel density), and every variant as a download link.
    showResult(status) {
      const fits = status.variants.filter((v) => status.srcset.includes(v.url));
      const widest = fits.reduce((a, b) => (b.width > a.width ? b : a), status.variants[0]);
      const result = this.$(".result");
      const image = result.querySelector("img");
      image.sizes = RESULT_SIZES;
      if (status.srcset) image.srcset = status.srcset;
      if (widest) {
        image.src = widest.url;
        image.width = widest.width;
        image.height = widest.height;
      }
      image.alt = `${this.file.name}, resized`;
      image.addEventListener("load", () => this.hidePreview(), { once: true });
      result.hidden = false;
      const list = this.$(".variants");
      for (const variant of status.variants) {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = variant.url;
        link.dataset.variant = variant.name;
        link.dataset.width = variant.width;
        link.dataset.height = variant.height;
        link.textContent = `${variant.name}: ${variant.width}×${variant.height} ` +
          `${variant.format.toUpperCase()}, ${formatBytes(variant.bytes)}`;
        link.setAttribute("aria-label", `Download the ${variant.name} version of ` +
          `${this.file.name} (${variant.width} by ${variant.height} pixels)`);
        item.append(link);
        list.append(item);
      }
    }

    // Cancel wins whatever the upload is doing: the waits end now, S3 requests are aborted,
    // and the server hears of it (now, or when the create answer names the upload).
    async cancel() {
      if (this.cancelled) return;
      this.aborter.abort();
      for (const xhr of this.active) xhr.abort();
      if (this.resumeNow) this.resumeNow();
      this.setState("cancelled", "cancelled");
      this.$(".progress").hidden = true;
      this.hidePreview();
      if (this.uploadId) await this.cancelOnServer(this.uploadId);
    }

    async cancelOnServer(uploadId) {
      this.uploadId = uploadId;
      this.element.dataset.uploadId = uploadId;
      try {
        await callApi("DELETE", `uploads/${uploadId}`);
        this.element.dataset.cancelledOnServer = "true";
      } catch (err) {
        this.showError(err, "while cancelling");
      }
    }
  }

  // --- wiring ------------------------------------------------------------------------------------
  function start() {
    const limitsReady = loadLimits();
    const list = document.getElementById("uploads");
    const input = document.getElementById("files");
    const zone = document.getElementById("dropzone");

    // Offer exactly the types the stage accepts (GIF too, by default).
    limitsReady.then((limits) => { if (limits) input.accept = limits.allowed_types.join(","); });

    const uploadAll = async (files) => {
      const limits = await limitsReady;
      for (const file of [...files]) new Upload(file, limits, list).run();
    };

    input.addEventListener("change", () => {
      const chosen = [...input.files]; // a live list: clearing the input empties it
      input.value = ""; // choosing the same file again is a new upload
      uploadAll(chosen);
    });
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("dragging"); });
    }
    for (const name of ["dragleave", "drop"]) {
      zone.addEventListener(name, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      uploadAll(event.dataTransfer.files);
    });
    // A file dropped beside the box would otherwise replace the page.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }

  start();
})();
