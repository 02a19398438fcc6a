/* EPIC bank atlas: a single-page app over the data/*.js chunks that epic_hf/viz/atlas.py writes.
 *
 * Data arrives as <script> files calling atlasChunk(kind, index, data), injected when a view first
 * needs them: browsers run local scripts from file:// but refuse fetch() of local JSON.
 * Labels and names are data, never markup: they reach the page only as text nodes (see h()).
 * Crops are drawn from the thumbnail and the box (an <img> scaled and shifted inside a clipping
 * frame), so the atlas holds no crop files.
 */
(function () {
  "use strict";

  const chunks = {};
  const waiting = {};
  const GRID_BATCH = 240; // channel cards laid out at a time
  const CROP_MARGIN = 0.5; // context around a box, on each side, as a fraction of its longer side
  let meta = null;
  let missing = new Set();
  let routeToken = 0;

  window.ATLAS_DATA = chunks;
  window.atlasChunk = function (kind, index, data) {
    const id = kind + "-" + index;
    chunks[id] = data;
    (waiting[id] || []).forEach(function (w) { w.resolve(data); });
    delete waiting[id];
  };

  function chunkFile(kind, index) {
    if (kind === "meta" || kind === "grid") return "data/" + kind + ".js";
    return "data/" + kind + "-" + String(index).padStart(3, "0") + ".js";
  }

  function load(kind, index) {
    const id = kind + "-" + index;
    if (chunks[id]) return Promise.resolve(chunks[id]);
    return new Promise(function (resolve, reject) {
      if (waiting[id]) { waiting[id].push({ resolve, reject }); return; }
      waiting[id] = [{ resolve, reject }];
      const script = document.createElement("script");
      script.src = chunkFile(kind, index);
      const fail = function () {
        (waiting[id] || []).forEach(function (w) { w.reject(new Error("could not load " + script.src)); });
        delete waiting[id];
      };
      script.onerror = fail;
      script.onload = function () { if (!chunks[id]) fail(); };
      document.head.appendChild(script);
    });
  }

  // -- DOM helpers -------------------------------------------------------------------------------
  function h(tag, attrs) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "style") Object.assign(el.style, value);
      else if (key === "class") el.className = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value);
    }
    const children = Array.prototype.slice.call(arguments, 2).flat(Infinity);
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const px = (v) => v.toFixed(2) + "px";
  const pct = (v) => (100 * v).toFixed(3) + "%";
  const label = (k) => (meta.labels[k] !== undefined ? meta.labels[k] : "class " + k);
  const samples = (n) => n + (n === 1 ? " sample" : " samples");
  const sampleName = (names, key) => (names && names[key] !== undefined ? names[key] : "#" + key);

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1000 || a < 0.001) return v.toExponential(2);
    return v.toPrecision(3);
  }

  function picture(key, style) {
    if (missing.has(key)) return h("div", { class: "missing", style }, "no image");
    return h("img", { src: "images/" + key + ".jpg", loading: "lazy", decoding: "async", alt: "", style });
  }

  function place(start, side, extent) {
    if (side >= extent) return (extent - side) / 2;
    return Math.min(Math.max(start, 0), extent - side);
  }

  // A square crop of the box with some context, from the thumbnail (stretched to input size, as
  // the boxes are in input pixels whatever the JPEG's own size).
  function crop(key, box, size, title) {
    const H = meta.inputSize[0], W = meta.inputSize[1];
    const [x0, y0, x1, y1] = box;
    const bw = Math.max(1, x1 - x0), bh = Math.max(1, y1 - y0);
    const side = Math.max(bw, bh) * (1 + 2 * CROP_MARGIN);
    const left = place((x0 + x1) / 2 - side / 2, side, W);
    const top = place((y0 + y1) / 2 - side / 2, side, H);
    const s = size / side;
    return h("div", { class: "crop", title: title || null, style: { width: size + "px", height: size + "px" } },
      picture(key, { left: px(-left * s), top: px(-top * s), width: px(W * s), height: px(H * s) }),
      h("div", { class: "box", style: { left: px((x0 - left) * s), top: px((y0 - top) * s),
                                         width: px(bw * s), height: px(bh * s) } }));
  }

  // The whole thumbnail with the box drawn on it.
  function fullImage(key, box, width) {
    const H = meta.inputSize[0], W = meta.inputSize[1];
    return h("div", { class: "full", style: { width: width + "px", height: Math.round(width * H / W) + "px" } },
      picture(key, { width: "100%", height: "100%" }),
      h("div", { class: "box", style: { left: pct(box[0] / W), top: pct(box[1] / H),
                                         width: pct((box[2] - box[0]) / W), height: pct((box[3] - box[1]) / H) } }));
  }

  function bar(value, scale) {
    const width = scale > 0 ? Math.min(1, Math.abs(value) / scale) : 0;
    const fill = h("span", { class: value < 0 ? "fill neg" : "fill", style: { width: pct(width) } });
    return h("span", { class: "track" }, fill);
  }

  // "channel 17 \u00b7 beak, 0.82" where an evaluation on part-annotated data named the channel by its best part
  const channelName = (c) => {
    const named = (meta.channelParts || {})[String(c)];
    return "channel " + c + (named ? " \u00b7 " + named[0] + ", " + Number(named[1]).toFixed(2) : "");
  };
  const channelLink = (c) => h("a", { href: "#/channel/" + c }, channelName(c));
  const classLink = (k) => h("a", { href: "#/class/" + k, class: "label" }, label(k));

  // -- views: each returns {title, body} --------------------------------------------------------
  function card(c, row) {
    const [reliance, topClass, score, crops] = row;
    return h("a", { class: "card", href: "#/channel/" + c, "data-channel": c },
      h("div", { class: "card-head" }, h("span", { class: "cid" }, channelName(c)),
        h("span", { class: "muted" }, meta.hasEvidence ? "reliance " + fmt(reliance) : "score " + fmt(score))),
      h("div", { class: "crops" }, crops.map((p) => crop(p[0], p.slice(1), 66))),
      topClass >= 0
        ? h("div", { class: "card-foot" }, "drives ", h("span", { class: "label" }, label(topClass)))
        : null);
  }

  async function gridView(sort) {
    const grid = await load("grid", 0);
    const sorts = [["id", "channel id"], ["score", "top prototype score"]];
    if (meta.hasEvidence) sorts.unshift(["reliance", "class reliance"]);
    if (!sorts.some((s) => s[0] === sort)) sort = sorts[0][0];
    const order = Array.from({ length: meta.numChannels }, (_, i) => i);
    const column = { reliance: 0, score: 2 }[sort];
    if (column !== undefined) order.sort((a, b) => grid.rows[b][column] - grid.rows[a][column] || a - b);
    let intro = "Each card is a channel of the disentangled feature map with its top prototypes " +
      "(the box marks where it fires).";
    if (meta.hasEvidence) {
      intro += " Class reliance: the sum over classes of the positive mean evidence the channel adds to their logits.";
    }
    // Cards go in by batches, the next one when the end of the page comes near: a bank of thousands
    // of channels shows its first screen at once instead of laying out every card up front.
    const cards = h("div", { class: "grid", id: "grid" });
    const more = h("button", { class: "more", type: "button" });
    let shown = 0;
    const showMore = () => {
      const batch = order.slice(shown, shown + GRID_BATCH);
      cards.append(...batch.map((c) => card(c, grid.rows[c])));
      shown += batch.length;
      more.textContent = "Show more (" + (order.length - shown) + " channels left)";
      more.hidden = shown >= order.length;
      if (!observer) return;
      observer.unobserve(more); // observing afresh reports the button's position now, so a tall
      if (!more.hidden) observer.observe(more); // screen keeps filling until the button is out of reach
    };
    const observer = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && shown < order.length) showMore();
    }, { rootMargin: "1200px" }) : null;
    more.addEventListener("click", showMore);
    showMore();
    return { title: "Channels", body: [
      h("h1", {}, meta.numChannels + " channels"),
      h("p", { class: "muted" }, intro),
      h("p", { class: "controls" }, "Sort by: ", sorts.map(([key, text]) =>
        key === sort ? h("strong", {}, text) : h("a", { href: "#/grid/" + key }, text))),
      cards, more,
    ] };
  }

  async function channelView(c) {
    if (!(c >= 0 && c < meta.numChannels)) {
      return missingView("There is no channel " + c + ": this bank has channels 0 to " + (meta.numChannels - 1) + ".");
    }
    const chunk = await load("channels", Math.floor(c / meta.channelsPerChunk));
    const item = chunk.items[c - chunk.start];
    const prototypes = item.p.map((p, rank) => h("figure", { class: "proto" },
      fullImage(p[0], p.slice(2), 200),
      crop(p[0], p.slice(2), 96, "the box with context"),
      h("figcaption", {},
        h("div", { class: "name" }, sampleName(chunk.names, p[0])),
        h("div", { class: "muted" }, "rank " + (rank + 1) + " \u00b7 score " + fmt(p[1]) +
          (chunk.names[p[0]] !== undefined ? " \u00b7 key " + p[0] : "")))));
    const scale = Math.max(0, ...item.c.map((x) => Math.abs(x[1])));
    const classes = meta.hasEvidence
      ? h("table", { class: "evidence" },
        h("tr", {}, h("th", {}, "class"), h("th", { class: "num" }, "mean evidence"), h("th", {}, "")),
        item.c.map(([k, v]) => h("tr", {},
          h("td", {}, classLink(k)), h("td", { class: "num" }, fmt(v)), h("td", {}, bar(v, scale)))))
      : h("p", { class: "muted" }, "This bank has no class evidence (it was fitted before it was recorded).");
    return { title: channelName(c).replace(/^c/, "C"), body: [
      h("p", { class: "pager" }, c > 0 ? h("a", { href: "#/channel/" + (c - 1) }, "\u2190 channel " + (c - 1)) : null,
        c + 1 < meta.numChannels ? h("a", { href: "#/channel/" + (c + 1) }, "channel " + (c + 1) + " \u2192") : null),
      h("h1", {}, "Channel " + c),
      h("h2", {}, "Prototypes"),
      h("div", { class: "protos", id: "prototypes" }, prototypes),
      h("h2", {}, "Classes it drives most"),
      h("div", { id: "classes" }, classes),
    ] };
  }

  async function classView(k) {
    if (!(k >= 0 && k < meta.numClasses)) {
      return missingView("There is no class " + k + ": this bank knows classes 0 to " + (meta.numClasses - 1) + ".");
    }
    const head = [h("h1", { class: "label" }, label(k)), h("p", { class: "muted" }, "class " + k +
      (meta.counts ? " \u00b7 " + samples(meta.counts[k]) + " predicted as this class" : ""))];
    if (!meta.hasEvidence) {
      return { title: label(k), body: head.concat(h("p", { class: "muted" }, "This bank has no class evidence.")) };
    }
    const chunk = await load("classes", Math.floor(k / meta.classesPerChunk));
    const top = chunk.items[k - chunk.start].filter(([, v]) => v > 0);
    if ((meta.counts && meta.counts[k] === 0) || !top.length) {
      // mean evidence over no samples is 0 for every channel: listing channels would claim a reliance
      return { title: label(k), body: head.concat(h("h2", {}, "Channels it relies on most"),
        h("p", { class: "muted", id: "no-evidence" }, "No evidence: no sample of the fit was predicted as this " +
          "class, so the bank cannot say which channels it relies on.")) };
    }
    const needed = [...new Set(top.map(([c]) => Math.floor(c / meta.channelsPerChunk)))];
    const loaded = await Promise.all(needed.map((i) => load("channels", i)));
    const byIndex = Object.fromEntries(needed.map((i, j) => [i, loaded[j]]));
    const scale = Math.max(0, ...top.map((x) => Math.abs(x[1])));
    const rows = top.map(([c, v]) => {
      const ch = byIndex[Math.floor(c / meta.channelsPerChunk)];
      const item = ch.items[c - ch.start];
      return h("div", { class: "row", "data-channel": c },
        h("div", { class: "row-head" }, channelLink(c), h("div", { class: "num" }, fmt(v)), bar(v, scale)),
        h("a", { class: "crops", href: "#/channel/" + c },
          item.p.map((p) => crop(p[0], p.slice(2), 96, sampleName(ch.names, p[0])))));
    });
    return { title: label(k), body: head.concat(
      h("h2", {}, "Channels it relies on most"),
      h("p", { class: "muted" },
        "Mean contribution of each channel to this class's logit over the samples predicted as it."),
      h("div", { class: "rows", id: "channels" }, rows)) };
  }

  function classListView() {
    const items = Array.from({ length: meta.numClasses }, (_, k) => h("li", {}, classLink(k),
      meta.counts ? h("span", { class: "muted" }, " " + meta.counts[k]) : null));
    return { title: "Classes",
             body: [h("h1", {}, meta.numClasses + " classes"), h("ol", { class: "classes", start: 0 }, items)] };
  }

  async function searchView(query) {
    const q = query.trim();
    const input = document.getElementById("q");
    if (document.activeElement !== input) input.value = q;
    // "12" is a channel id or a class index; "channel 12" / "c12" only a channel, "class 12" only a class.
    const number = /^(channel|ch|c|class)?\s*#?(\d+)$/i.exec(q);
    const n = number ? parseInt(number[2], 10) : -1;
    const prefix = number && number[1] ? number[1].toLowerCase() : "";
    const body = [h("h1", {}, "Search: ", h("span", { class: "label" }, q))];
    if (n >= 0 && prefix !== "class" && n < meta.numChannels) {
      const grid = await load("grid", 0);
      body.push(h("h2", {}, "Channel"), h("div", { class: "grid" }, card(n, grid.rows[n])));
    }
    const needle = q.toLowerCase();
    const matches = [];
    for (let k = 0; k < meta.numClasses && needle; k++) {
      const byIndex = n === k && (prefix === "" || prefix === "class");
      if (byIndex || label(k).toLowerCase().includes(needle)) matches.push(k);
    }
    body.push(h("h2", {}, matches.length + (matches.length === 1 ? " class" : " classes")));
    const about = (k) => " \u00b7 class " + k + (meta.counts ? " \u00b7 " + samples(meta.counts[k]) : "");
    body.push(h("ul", { class: "results", id: "results" },
      matches.slice(0, 500).map((k) => h("li", {}, classLink(k), h("span", { class: "muted" }, about(k))))));
    if (matches.length > 500) body.push(h("p", { class: "muted" }, "and " + (matches.length - 500) + " more"));
    return { title: "Search", body };
  }

  function missingView(text) {
    return { title: "Not found",
             body: [h("h1", {}, "Not found"), h("p", {}, text), h("p", {}, h("a", { href: "#/" }, "All channels"))] };
  }

  // -- routing -----------------------------------------------------------------------------------
  const toInt = (s) => (/^\d+$/.test(s) ? parseInt(s, 10) : NaN);

  function viewFor(hash) {
    const parts = hash.replace(/^#\/?/, "").split("/");
    let arg = parts.slice(1).join("/");
    try { arg = decodeURIComponent(arg); } catch (e) { /* a literal % in the address */ }
    switch (parts[0]) {
      case "": case "grid": return gridView(arg);
      case "channel": return channelView(toInt(arg));
      case "class": return classView(toInt(arg));
      case "classes": return classListView();
      case "search": return searchView(arg);
      default: return missingView("The atlas has no page " + hash + ".");
    }
  }

  async function route() {
    const token = ++routeToken;
    const main = document.getElementById("main");
    let view;
    try {
      view = await viewFor(location.hash);
    } catch (error) {
      view = { title: "Error",
               body: [h("h1", {}, "Could not show this page"), h("p", {}, String(error.message || error))] };
    }
    if (token !== routeToken) return; // a newer navigation won
    main.replaceChildren(...[].concat(view.body));
    document.title = view.title + " \u00b7 " + meta.title;
    window.scrollTo(0, 0);
  }

  function setUpSearch() {
    const form = document.getElementById("search");
    const input = document.getElementById("q");
    let timer = null;
    const go = (replace) => {
      const q = input.value.trim();
      const target = q ? "#/search/" + encodeURIComponent(q) : "#/";
      if (location.hash === target) return;
      if (replace && location.hash.startsWith("#/search/")) location.replace(target);
      else location.hash = target;
    };
    form.addEventListener("submit", (event) => { event.preventDefault(); clearTimeout(timer); go(false); });
    input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => go(true), 250); });
  }

  function showSummary() {
    const line = document.getElementById("summary");
    line.replaceChildren(...meta.summary.map(([key, value]) =>
      h("span", {}, h("span", { class: "muted" }, key + " "), value)));
  }

  load("meta", 0).then(function (data) {
    meta = data;
    missing = new Set(meta.missing);
    showSummary();
    setUpSearch();
    window.addEventListener("hashchange", route);
    return route();
  }).catch(function (error) {
    document.getElementById("main").replaceChildren(h("h1", {}, "The atlas data did not load"),
      h("p", {}, String(error.message || error) +
        ": open index.html from inside the atlas folder, next to data/ and images/."));
  });
})();
