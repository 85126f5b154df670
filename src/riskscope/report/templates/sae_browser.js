(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("sae-data").textContent);
  var feats = data.features, vocab = data.vocab, PAGE = 50, page = 0, shown = feats.slice();
  var $ = function (id) { return document.getElementById(id); };
  var el = function (tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  };
  var tok = function (i) { var t = vocab[String(i)]; return t === undefined ? "<" + i + ">" : t; };
  var num = function (x, d) { return (x === null || x === undefined) ? "n/a" : (Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3)) ? x.toExponential(2) : x.toFixed(d === undefined ? 3 : d); };
  var searchText = function (f) {
    if (f._s === undefined) {
      var parts = [];
      f.contexts.forEach(function (c) { c.tokens.forEach(function (t) { parts.push(tok(t)); }); parts.push("\n"); });
      f.boosts.forEach(function (b) { parts.push(tok(b[0])); parts.push("\n"); });
      f._s = parts.join("").toLowerCase();
    }
    return f._s;
  };
  var key = {
    "id": function (f) { return f.id; },
    "density-desc": function (f) { return -(f.density !== undefined ? f.density : f.fires); },
    "density-asc": function (f) { return (f.density !== undefined ? f.density : f.fires); },
    "risk": function (f) { return -Math.abs(f.dz || 0); },
    "q": function (f) { return f.q === undefined || f.q === null ? 2 : f.q; },
    "cos": function (f) { return -Math.abs(f.cos || 0); },
    "max": function (f) { return -(f.max || 0); }
  };
  function histogram(f) {
    var NS = "http://www.w3.org/2000/svg", W = 320, H = 70, h = f.hist, n = h.length;
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + (H + 14));
    svg.setAttribute("width", W); svg.setAttribute("class", "fb-hist");
    svg.setAttribute("role", "img"); svg.setAttribute("aria-label", "activation histogram of latent " + f.id);
    var top = Math.max.apply(null, h.concat([1]));
    h.forEach(function (c, i) {
      var r = document.createElementNS(NS, "rect"), bh = Math.max(c > 0 ? 1 : 0, H * c / top);
      r.setAttribute("x", i * W / n + 0.5); r.setAttribute("width", W / n - 1);
      r.setAttribute("y", H - bh); r.setAttribute("height", bh); r.setAttribute("fill", "#0b5cad");
      svg.appendChild(r);
    });
    var lab = document.createElementNS(NS, "text");
    lab.setAttribute("x", 0); lab.setAttribute("y", H + 12); lab.setAttribute("font-size", "10");
    lab.textContent = "0 … " + num(f.max) + " (non-zero activations, " + f.fires + " tokens)";
    svg.appendChild(lab);
    return svg;
  }
  function detail(f) {
    var d = el("div", null, "fb-detail");
    d.appendChild(el("h3", "Top-activating contexts"));
    if (!f.contexts.length) d.appendChild(el("p", "It never fired on the tokens read.", "muted"));
    f.contexts.forEach(function (c) {
      var line = el("div", null, "fb-ctx");
      c.tokens.forEach(function (t, j) {
        var s = el("span", tok(t)), a = c.acts[j] / 99;
        if (a > 0) { s.style.background = "rgba(230,120,20," + (0.15 + 0.85 * a).toFixed(2) + ")"; s.title = num(a * f.max); }
        line.appendChild(s);
      });
      line.title = "max " + num(c.max);
      d.appendChild(line);
    });
    d.appendChild(el("h3", "Activation histogram"));
    d.appendChild(histogram(f));
    d.appendChild(el("h3", "Output tokens boosted (W_dec · W_U)"));
    var up = el("div", null, "fb-toks");
    f.boosts.forEach(function (b) { var s = el("span", tok(b[0])); s.title = num(b[1]); up.appendChild(s); });
    d.appendChild(up);
    d.appendChild(el("h3", "Output tokens suppressed"));
    var dn = el("div", null, "fb-toks down");
    f.suppresses.forEach(function (b) { var s = el("span", tok(b[0])); s.title = num(b[1]); dn.appendChild(s); });
    d.appendChild(dn);
    return d;
  }
  function item(f) {
    var box = el("div", null, "fb-item"), head = el("div", null, "fb-head");
    head.appendChild(el("b", "#" + f.id));
    head.appendChild(el("span", "density " + (f.density !== undefined ? num(f.density, 4) : "n/a")));
    head.appendChild(el("span", "fired on " + f.fires + " tokens read"));
    head.appendChild(el("span", "max " + num(f.max)));
    if (f.dz !== undefined) head.appendChild(el("span", "d_z " + num(f.dz, 2) + ", q " + num(f.q) + ", cos " + num(f.cos, 2)));
    if (f.contexts.length) {
      var c = f.contexts[0], best = 0;
      c.acts.forEach(function (a, j) { if (a > c.acts[best]) best = j; });
      head.appendChild(el("span", "peak on “" + tok(c.tokens[best]) + "”", "muted"));
    }
    head.setAttribute("role", "button"); head.tabIndex = 0;
    var open = function () {
      if (box.lastChild.className === "fb-detail") box.removeChild(box.lastChild); else box.appendChild(detail(f));
    };
    head.addEventListener("click", open);
    head.addEventListener("keydown", function (e) { if (e.key === "Enter") open(); });
    box.appendChild(head);
    return box;
  }
  function render() {
    var list = $("fb-list"), pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    while (list.firstChild) list.removeChild(list.firstChild);
    shown.slice(page * PAGE, (page + 1) * PAGE).forEach(function (f, i) {
      var it = item(f);
      if (page === 0 && i === 0) it.appendChild(detail(f));
      list.appendChild(it);
    });
    $("fb-count").textContent = shown.length + " of " + feats.length + " latents";
    $("fb-page").textContent = "page " + (page + 1) + " of " + pages;
    $("fb-prev").disabled = page === 0; $("fb-next").disabled = page >= pages - 1;
  }
  function update() {
    var q = $("fb-search").value.trim().toLowerCase(), k = key[$("fb-sort").value] || key.id;
    shown = q ? feats.filter(function (f) { return searchText(f).indexOf(q) >= 0 || String(f.id) === q; }) : feats.slice();
    shown.sort(function (a, b) { return (k(a) - k(b)) || (a.id - b.id); });
    page = 0; render();
  }
  var timer = null;
  $("fb-search").addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(update, 150); });
  $("fb-sort").addEventListener("change", update);
  $("fb-prev").addEventListener("click", function () { page -= 1; render(); });
  $("fb-next").addEventListener("click", function () { page += 1; render(); });
  update();
})();
