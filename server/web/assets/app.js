// The chat page of `chatglm serve`. Conversations live in localStorage; replies
// stream from the server's own /v1/chat/completions. Text from the user and
// the model is untrusted: it only ever reaches the page as text nodes or
// through the Markdown renderer below, which builds DOM nodes (no innerHTML).
'use strict';
(() => {
  const STORE = 'chatglm.conversations', CURRENT = 'chatglm.current', KEY = 'chatglm.apiKey';
  const MAX_IMPORT_BYTES = 8 << 20, MAX_IMPORT_MESSAGES = 10000;
  const $ = (id) => document.getElementById(id);

  // el builds an element; attrs are set by our own code only, never from
  // untrusted text (text goes in as children, which become text nodes).
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  // ---- Markdown: a small renderer that builds DOM nodes -------------------

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*)$/;
  const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
  const ITEM = /^( *)([-*+]|\d{1,9}[.)])(\s+|$)(.*)$/;
  const QUOTE = /^ {0,3}> ?(.*)$/;
  const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

  function renderMarkdown(text, parent) {
    blocks(text.replace(/\r\n?/g, '\n').split('\n'), parent, 0);
  }

  function blocks(lines, parent, depth) {
    if (depth > 8) { parent.append(el('p', { text: lines.join('\n') })); return; }
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) { i++; continue; }
      if ((m = FENCE.exec(line))) {
        const fence = m[1], body = [];
        for (i++; i < lines.length; i++) {
          if (lines[i].trim().startsWith(fence[0].repeat(fence.length)) && !lines[i].trim().replace(/[`~]/g, '')) { i++; break; }
          body.push(lines[i]);
        }
        parent.append(codeBlock(body.join('\n'), m[2]));
        continue;
      }
      if ((m = HEADING.exec(line))) {
        const h = el('h' + Math.min(m[1].length + 2, 6));
        let title = m[2].trimEnd();
        while (title.endsWith('#')) title = title.slice(0, -1); // a closing run of #
        inline(title.trimEnd(), h, 0);
        parent.append(h);
        i++;
        continue;
      }
      if (RULE.test(line)) { parent.append(el('hr')); i++; continue; }
      if (QUOTE.test(line)) {
        const body = [];
        while (i < lines.length && lines[i].trim() && (m = QUOTE.exec(lines[i]))) { body.push(m[1]); i++; }
        const q = el('blockquote');
        blocks(body, q, depth + 1);
        parent.append(q);
        continue;
      }
      if (line.includes('|') && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes('-')) {
        i = table(lines, i, parent);
        continue;
      }
      if ((m = ITEM.exec(line)) && m[1].length < 4) {
        i = list(lines, i, parent, depth);
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !HEADING.test(lines[i]) &&
        !QUOTE.test(lines[i]) && !(para.length && ITEM.test(lines[i]) && !/^\s{4}/.test(lines[i]))) {
        para.push(lines[i].trim());
        i++;
      }
      const p = el('p');
      inline(para.join('\n'), p, 0);
      parent.append(p);
    }
  }

  function list(lines, i, parent, depth) {
    const first = ITEM.exec(lines[i]);
    const indent = first[1].length, ordered = /\d/.test(first[2]);
    const start = ordered ? parseInt(first[2], 10) : 1;
    const node = el(ordered ? 'ol' : 'ul');
    if (ordered && start !== 1) node.setAttribute('start', String(start));
    while (i < lines.length) {
      const m = ITEM.exec(lines[i]);
      if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
      const body = [m[4]];
      const contIndent = indent + m[2].length + 1;
      for (i++; i < lines.length; i++) {
        const l = lines[i];
        if (!l.trim()) {
          // a blank line continues the item only if an indented line follows
          if (i + 1 < lines.length && lines[i + 1].startsWith(' '.repeat(Math.min(contIndent, indent + 2)))) { body.push(''); continue; }
          break;
        }
        const im = ITEM.exec(l);
        if (im && im[1].length <= indent) break;
        if (!im && !l.startsWith(' ') && body[body.length - 1] === '') break;
        body.push(l.replace(new RegExp('^ {0,' + contIndent + '}'), ''));
      }
      const li = el('li');
      if (body.length === 1) inline(body[0], li, 0);
      else blocks(body, li, depth + 1);
      // a tight item holds one paragraph: show it without the <p> margin
      if (li.childElementCount && li.firstElementChild.tagName === 'P') li.firstElementChild.classList.add('tight');
      node.append(li);
      if (i < lines.length && !lines[i].trim()) break;
    }
    parent.append(node);
    return i;
  }

  function cells(line) {
    let s = line.trim();
    if (s.startsWith('|')) s = s.slice(1);
    if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
    return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
  }

  function table(lines, i, parent) {
    const head = cells(lines[i]);
    const align = cells(lines[i + 1]).map((c) => c.startsWith(':') && c.endsWith(':') ? 'center' : c.endsWith(':') ? 'right' : '');
    const t = el('table'), thead = el('thead'), tbody = el('tbody'), hr = el('tr');
    head.forEach((c, j) => { const th = el('th', align[j] ? { class: 'al-' + align[j] } : {}); inline(c, th, 0); hr.append(th); });
    thead.append(hr);
    for (i += 2; i < lines.length && lines[i].includes('|') && lines[i].trim(); i++) {
      const tr = el('tr');
      const row = cells(lines[i]);
      for (let j = 0; j < head.length; j++) {
        const td = el('td', align[j] ? { class: 'al-' + align[j] } : {});
        inline(row[j] || '', td, 0);
        tr.append(td);
      }
      tbody.append(tr);
    }
    t.append(thead, tbody);
    parent.append(el('div', { class: 'table-wrap' }, t));
    return i;
  }

  function codeBlock(code, lang) {
    const copy = el('button', { type: 'button', class: 'copy-code', text: 'Copy' });
    copy.addEventListener('click', () => copyText(code, copy));
    return el('div', { class: 'code' },
      el('div', { class: 'code-head' }, el('span', { text: lang || 'code' }), copy),
      el('pre', {}, el('code', { text: code })));
  }

  // Spans are bounded (SPAN characters) so that text full of unmatched
  // markers renders in linear time, not quadratic.
  const SPAN = '{0,400}?';
  const INLINE = new RegExp([
    '(`{1,16})([^`]|[^`][\\s\\S]' + SPAN + '[^`])\\1(?!`)', // 1,2 code span
    '!\\[([^\\]\\n]{0,400})\\]\\(([^)\\s]{0,2000})(?:\\s+"[^"\\n]{0,400}")?\\)', // 3,4 image
    '\\[([^\\]\\n]{1,400})\\]\\(([^)\\s]{0,2000})(?:\\s+"[^"\\n]{0,400}")?\\)', // 5,6 link
    '\\*\\*(?=\\S)([\\s\\S]' + SPAN + '\\S)\\*\\*', // 7 strong
    '(?<![\\w])__(?=\\S)([\\s\\S]' + SPAN + '\\S)__(?![\\w])', // 8 strong
    '~~(?=\\S)([\\s\\S]' + SPAN + '\\S)~~', // 9 strike
    '\\*(?=[^\\s*])([\\s\\S]' + SPAN + '[^\\s*])\\*', // 10 em
    '(?<![\\w])_(?=[^\\s_])([\\s\\S]' + SPAN + '[^\\s_])_(?![\\w])', // 11 em
    '(https?://[^\\s<>()]{1,2000}[^\\s<>().,;:!?\'"])', // 12 bare URL
    '(\\n)', // 13 line break
  ].join('|'), 'g');

  function inline(text, parent, depth) {
    if (depth > 6) { parent.append(text); return; }
    const re = new RegExp(INLINE.source, 'g');
    let last = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      last = re.lastIndex;
      if (m[1]) {
        let c = m[2];
        if (/^ .*[^ ] $/.test(c)) c = c.slice(1, -1);
        parent.append(el('code', { text: c }));
      } else if (m[0].startsWith('![')) {
        // Images would load from anywhere: show them as text.
        parent.append(el('span', { class: 'md-image', text: '[image: ' + (m[3] || m[4]) + ']' }));
      } else if (m[5] !== undefined) {
        const a = link(m[6]);
        if (a) { inline(m[5], a, depth + 1); parent.append(a); } else parent.append(m[0]);
      } else if (m[7] !== undefined || m[8] !== undefined) {
        const s = el('strong'); inline(m[7] ?? m[8], s, depth + 1); parent.append(s);
      } else if (m[9] !== undefined) {
        const s = el('del'); inline(m[9], s, depth + 1); parent.append(s);
      } else if (m[10] !== undefined || m[11] !== undefined) {
        const s = el('em'); inline(m[10] ?? m[11], s, depth + 1); parent.append(s);
      } else if (m[12] !== undefined) {
        const a = link(m[12]);
        if (a) { a.textContent = m[12]; parent.append(a); } else parent.append(m[12]);
      } else {
        parent.append(el('br'));
      }
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  // link returns an <a> for http(s) and mailto URLs, null for anything else
  // (javascript:, data:, ...), which then stays text.
  function link(href) {
    let u;
    try { u = new URL(href, location.href); } catch { return null; }
    if (!['http:', 'https:', 'mailto:'].includes(u.protocol)) return null;
    return el('a', { href: u.href, rel: 'noopener noreferrer nofollow', target: '_blank', referrerpolicy: 'no-referrer' });
  }

  // ---- ChatGLM3 tool calls: JSON arguments <-> tool_call(...) code --------

  const PY_KEYWORDS = new Set(('False None True and as assert async await break class continue def del elif else except ' +
    'finally for from global if import in is lambda nonlocal not or pass raise return try while with yield').split(' '));

  function pyLiteral(v) {
    if (v === null) return 'None';
    if (v === true) return 'True';
    if (v === false) return 'False';
    if (typeof v === 'string') return JSON.stringify(v);
    if (typeof v === 'number') return String(v);
    if (Array.isArray(v)) return '[' + v.map(pyLiteral).join(', ') + ']';
    return '{' + Object.entries(v).map(([k, x]) => JSON.stringify(k) + ': ' + pyLiteral(x)).join(', ') + '}';
  }

  // toolCallCode writes a call's JSON arguments as the server does for the
  // prompt (and the model writes calls): ```python tool_call(k=v, ...)```.
  function toolCallCode(args) {
    let obj = {};
    try { obj = JSON.parse(args || '{}'); } catch { /* keep {} */ }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) obj = {};
    const kw = [], extra = [];
    for (const [k, v] of Object.entries(obj)) {
      if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) && !PY_KEYWORDS.has(k)) kw.push(k + '=' + pyLiteral(v));
      else extra.push(JSON.stringify(k) + ': ' + pyLiteral(v));
    }
    if (extra.length) kw.push('**{' + extra.join(', ') + '}');
    return '```python\ntool_call(' + kw.join(', ') + ')\n```';
  }

  // parseToolCall reads the arguments of a saved tool_call(...) back into a
  // JSON string; it returns null when the code is not such a call.
  function parseToolCall(content) {
    const m = /tool_call\s*\(([\s\S]*)\)/.exec(content);
    if (!m) return null;
    const s = m[1];
    let i = 0;
    const ws = () => { while (i < s.length && /\s/.test(s[i])) i++; };
    const fail = () => { throw new Error('bad literal'); };
    function value(d) {
      if (d > 32) fail();
      ws();
      const c = s[i];
      if (c === '"' || c === "'") {
        let out = '';
        for (i++; i < s.length && s[i] !== c; i++) {
          if (s[i] !== '\\') { out += s[i]; continue; }
          const e = s[++i];
          const simple = { n: '\n', t: '\t', r: '\r', b: '\b', f: '\f', '0': '\0' };
          if (e in simple) out += simple[e];
          else if (e === 'u' || e === 'x') {
            const n = e === 'u' ? 4 : 2;
            out += String.fromCharCode(parseInt(s.slice(i + 1, i + 1 + n), 16));
            i += n;
          } else out += e;
        }
        if (s[i] !== c) fail();
        i++;
        return out;
      }
      if (c === '[' || c === '(' || c === '{') {
        const close = { '[': ']', '(': ')', '{': '}' }[c];
        const arr = [], obj = {};
        i++;
        for (;;) {
          ws();
          if (s[i] === close) { i++; break; }
          if (c === '{') {
            const k = value(d + 1);
            ws();
            if (s[i++] !== ':') fail();
            obj[k] = value(d + 1);
          } else arr.push(value(d + 1));
          ws();
          if (s[i] === ',') i++;
          else if (s[i] !== close) fail();
        }
        return c === '{' ? obj : arr;
      }
      const w = /^(True|False|None|-?\d+(\.\d+)?([eE][-+]?\d+)?)/.exec(s.slice(i));
      if (!w) fail();
      i += w[0].length;
      return { True: true, False: false, None: null }[w[0]] ?? Number(w[0]);
    }
    try {
      const args = {};
      for (;;) {
        ws();
        if (i >= s.length) break;
        if (s.startsWith('**', i)) { i += 2; Object.assign(args, value(0)); } else {
          const k = /^[A-Za-z_]\w*/.exec(s.slice(i));
          if (!k) fail();
          i += k[0].length;
          ws();
          if (s[i++] !== '=') fail();
          args[k[0]] = value(0);
        }
        ws();
        if (s[i] === ',') i++;
        else if (i < s.length) fail();
      }
      return JSON.stringify(args);
    } catch { return null; }
  }

  // ---- state ---------------------------------------------------------------

  const state = {
    settings: null, // the server's defaults (GET /web/settings)
    convs: [],
    current: null,
    ctrl: null, // AbortController of the reply being generated
    streaming: null, // {msg, node} of that reply
    pendingRetry: null, // what to run again once an API key is given
    confirmDelete: null,
    renaming: null,
    search: '',
  };

  function loadConvs() {
    try {
      const v = JSON.parse(localStorage.getItem(STORE) || '[]');
      if (Array.isArray(v)) state.convs = v.filter((c) => c && typeof c.id === 'string' && Array.isArray(c.messages));
    } catch { state.convs = []; }
    state.current = state.convs.find((c) => c.id === localStorage.getItem(CURRENT)) || state.convs[0] || null;
  }

  function save() {
    try {
      localStorage.setItem(STORE, JSON.stringify(state.convs));
      if (state.current) localStorage.setItem(CURRENT, state.current.id);
    } catch (e) { setStatus('could not save the conversations in this browser: ' + e.message, true); }
  }

  function newConv(title) {
    const c = { id: 'c' + Date.now().toString(36) + Math.random().toString(36).slice(2, 8), title: title || 'New chat',
      system: '', tools: '', params: {}, messages: [], updated: Date.now() };
    state.convs.unshift(c);
    state.current = c;
    return c;
  }

  function conv() { return state.current || newConv(); }

  function setStatus(text, isError) {
    const s = $('status');
    s.textContent = text || '';
    s.classList.toggle('error', !!isError);
  }

  function apiHeaders() {
    const h = { 'Content-Type': 'application/json' };
    const k = localStorage.getItem(KEY);
    if (k) h.Authorization = 'Bearer ' + k;
    return h;
  }

  function askKey(retry, message) {
    state.pendingRetry = retry;
    $('key-error').textContent = message || '';
    $('key-dialog').hidden = false;
    $('key-input').value = '';
    $('key-input').focus();
  }

  async function loadSettings() {
    const resp = await fetch('/web/settings', { headers: apiHeaders() });
    if (resp.status === 401) {
      const hadKey = !!localStorage.getItem(KEY);
      localStorage.removeItem(KEY);
      askKey(loadSettings, hadKey ? 'That key was refused.' : '');
      return;
    }
    if (!resp.ok) throw new Error('GET /web/settings: ' + resp.status);
    state.settings = await resp.json();
    const s = state.settings;
    $('defaults').textContent = `temperature ${s.temperature}, top_p ${s.top_p}, top_k ${s.top_k}, max_tokens ${s.max_tokens || 'rest of the context'}`;
    $('p-temperature').placeholder = String(s.temperature);
    $('p-top_p').placeholder = String(s.top_p);
    $('p-max_tokens').placeholder = s.max_tokens ? String(s.max_tokens) : 'all';
    document.title = s.model ? s.model + ' — chatglm' : 'chatglm';
    renderHeader();
  }

  // ---- rendering -------------------------------------------------------------

  function renderList() {
    const ul = $('conv-list');
    ul.replaceChildren();
    const q = state.search.trim().toLowerCase();
    for (const c of state.convs) {
      if (q && !c.title.toLowerCase().includes(q) && !c.messages.some((m) => (m.content || '').toLowerCase().includes(q))) continue;
      const li = el('li', { class: c === state.current ? 'current' : '' });
      if (state.renaming === c.id) {
        const input = el('input', { type: 'text', class: 'rename', 'aria-label': 'New name' });
        input.value = c.title;
        const done = (ok) => {
          if (ok && input.value.trim()) { c.title = input.value.trim().slice(0, 200); save(); }
          state.renaming = null;
          renderList();
          renderHeader();
        };
        input.addEventListener('keydown', (e) => {
          if (e.key === 'Enter' && !e.isComposing && e.keyCode !== 229) { e.preventDefault(); done(true); }
          if (e.key === 'Escape') done(false);
        });
        input.addEventListener('blur', () => { if (state.renaming === c.id) done(true); });
        li.append(input);
        ul.append(li);
        setTimeout(() => { input.focus(); input.select(); });
        continue;
      }
      const open = el('button', { type: 'button', class: 'conv-title', text: c.title });
      if (c === state.current) open.setAttribute('aria-current', 'true');
      open.addEventListener('click', () => switchTo(c));
      const rename = el('button', { type: 'button', class: 'small', text: 'Rename', 'aria-label': 'Rename ' + c.title });
      rename.addEventListener('click', () => { state.renaming = c.id; renderList(); });
      const del = el('button', { type: 'button', class: 'small danger', text: state.confirmDelete === c.id ? 'Delete?' : 'Delete', 'aria-label': 'Delete ' + c.title });
      del.addEventListener('click', () => {
        if (state.confirmDelete !== c.id) { state.confirmDelete = c.id; renderList(); ul.querySelector('.danger[data-id="' + c.id + '"]')?.focus(); return; }
        deleteConv(c);
      });
      del.dataset.id = c.id;
      li.append(open, el('span', { class: 'conv-actions' }, rename, del));
      ul.append(li);
    }
  }

  function deleteConv(c) {
    if (state.ctrl && state.current === c) stop();
    state.convs = state.convs.filter((x) => x !== c);
    state.confirmDelete = null;
    if (state.current === c) state.current = state.convs[0] || null;
    save();
    renderAll();
  }

  function switchTo(c) {
    if (state.ctrl) stop();
    state.current = c;
    state.confirmDelete = null;
    save();
    renderAll();
    document.body.classList.remove('sidebar-open');
    $('input').focus();
  }

  function renderHeader() {
    const c = state.current;
    $('title').textContent = c ? c.title : 'ChatGLM3';
    const ctx = state.settings?.context_size || 0;
    let used = 0;
    if (c) for (const m of c.messages) if (m.stats && m.stats.prompt) used = m.stats.prompt + (m.stats.completion || 0);
    $('ctx-use').textContent = ctx ? `context ${used} / ${ctx} (${Math.round(100 * used / ctx)}%)` : '';
    $('ctx-use').classList.toggle('warn', ctx > 0 && used / ctx > 0.85);
  }

  function renderSettings() {
    const c = state.current;
    $('system').value = c ? c.system || '' : '';
    $('tools').value = c ? c.tools || '' : '';
    for (const k of ['temperature', 'top_p', 'max_tokens']) {
      const v = c?.params?.[k];
      $('p-' + k).value = v === undefined || v === null ? '' : String(v);
    }
  }

  function renderAll() {
    renderList();
    renderHeader();
    renderSettings();
    renderMessages();
  }

  function renderMessages() {
    const box = $('messages');
    box.replaceChildren();
    const c = state.current;
    if (!c) return;
    c.messages.forEach((m, i) => box.append(messageNode(c, m, i)));
    box.scrollTop = box.scrollHeight;
  }

  function roleName(m) {
    if (m.role === 'assistant') return m.metadata ? 'ChatGLM · tool call' : 'ChatGLM';
    return { user: 'You', observation: 'Tool result', system: 'System' }[m.role] || m.role;
  }

  function messageNode(c, m, i) {
    const node = el('article', { class: 'msg role-' + m.role, 'aria-label': roleName(m) });
    const actions = el('span', { class: 'actions' });
    const copy = el('button', { type: 'button', class: 'small', text: 'Copy' });
    copy.addEventListener('click', () => copyText(m.content, copy));
    actions.append(copy);
    const busy = !!state.ctrl;
    if (m.role === 'user' && !busy) {
      const edit = el('button', { type: 'button', class: 'small', text: 'Edit' });
      edit.addEventListener('click', () => editMessage(c, i, node));
      actions.append(edit);
    }
    const last = i === c.messages.length - 1;
    if (m.role === 'assistant' && last && !busy) {
      const again = el('button', { type: 'button', class: 'small regenerate', text: 'Regenerate' });
      again.addEventListener('click', () => regenerate());
      actions.append(again);
    }
    node.append(el('header', {}, el('span', { class: 'who', text: roleName(m) }), actions));
    const body = el('div', { class: 'body' });
    fillBody(body, m);
    node.append(body);
    const stats = el('footer', { class: 'stats' });
    fillStats(stats, m);
    node.append(stats);
    if (m.role === 'assistant' && m.metadata && last && !busy) node.append(observationForm());
    return node;
  }

  function fillBody(body, m) {
    body.replaceChildren();
    if (m.role === 'assistant' && m.metadata) {
      let args = m.args || '{}';
      try { args = JSON.stringify(JSON.parse(args), null, 2); } catch { /* show as it is */ }
      body.append(el('div', { class: 'tool-call' },
        el('div', {}, 'Calls ', el('code', { class: 'tool-name', text: m.metadata }), ' with:'),
        el('pre', { class: 'tool-args' }, el('code', { text: args }))));
      return;
    }
    if (m.role === 'assistant') {
      renderMarkdown(m.content || '', body);
      if (state.streaming?.msg === m) body.append(el('span', { class: 'cursor', 'aria-hidden': 'true' }));
      return;
    }
    body.append(el('div', { class: 'plain', text: m.content || '' }));
  }

  function fillStats(footer, m) {
    footer.replaceChildren();
    const s = m.stats;
    const parts = [];
    if (s) {
      if (s.completion !== undefined) parts.push(`${s.approx ? '~' : ''}${s.completion} tokens`);
      if (s.tps) parts.push(`${s.tps.toFixed(1)} tokens/s`);
      if (s.prompt !== undefined) parts.push(`prompt ${s.prompt} (${s.cached || 0} cached)`);
    }
    if (m.stopped) parts.push('stopped');
    else if (m.finish === 'length') parts.push('cut at max_tokens');
    if (parts.length) footer.append(el('span', { class: 'tokens', text: parts.join(' · ') }));
    if (m.error) footer.append(el('span', { class: 'error', text: m.error }));
  }

  function observationForm() {
    const form = el('form', { class: 'observation' });
    const ta = el('textarea', { rows: '2', 'aria-label': 'Tool result', placeholder: 'The tool\'s result (observation), sent back to the model' });
    const send = el('button', { type: 'submit', text: 'Send result' });
    form.append(ta, send);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!ta.value.trim() || state.ctrl) return;
      conv().messages.push({ role: 'observation', content: ta.value });
      touch();
      renderAll();
      generate();
    });
    return form;
  }

  function editMessage(c, i, node) {
    const body = node.querySelector('.body');
    const ta = el('textarea', { rows: '3', class: 'edit', 'aria-label': 'Edit the message' });
    ta.value = c.messages[i].content;
    const ok = el('button', { type: 'button', text: 'Save & continue' });
    const cancel = el('button', { type: 'button', text: 'Cancel' });
    ok.addEventListener('click', () => {
      if (state.ctrl || !ta.value.trim()) return;
      c.messages = c.messages.slice(0, i);
      c.messages.push({ role: 'user', content: ta.value });
      touch();
      renderAll();
      generate();
    });
    cancel.addEventListener('click', () => renderMessages());
    ta.addEventListener('keydown', (e) => { if (e.key === 'Escape') renderMessages(); });
    body.replaceChildren(ta, el('div', { class: 'edit-actions' }, ok, cancel));
    ta.focus();
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const ta = el('textarea', { class: 'offscreen', 'aria-hidden': 'true' });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      document.execCommand('copy');
      ta.remove();
    }
    const was = button.textContent;
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = was; }, 1200);
  }

  // ---- talking to the server --------------------------------------------------

  // touch marks c (by default the current conversation) as the most
  // recently used one, and saves.
  function touch(c) {
    c = c || conv();
    c.updated = Date.now();
    // the conversation most recently used comes first
    state.convs = [c, ...state.convs.filter((x) => x !== c)];
    save();
  }

  function requestMessages(c) {
    const out = [];
    if (c.system) out.push({ role: 'system', content: c.system });
    let call = 0;
    for (const m of c.messages) {
      if (m.role === 'assistant' && m.metadata) {
        out.push({ role: 'assistant', content: null,
          tool_calls: [{ id: 'call_' + (++call), type: 'function', function: { name: m.metadata, arguments: m.args || '{}' } }] });
      } else if (m.role === 'observation') {
        out.push({ role: 'tool', tool_call_id: 'call_' + call, content: m.content });
      } else out.push({ role: m.role, content: m.content });
    }
    return out;
  }

  function toolsOf(c) {
    if (!c.tools || !c.tools.trim()) return null;
    const v = JSON.parse(c.tools);
    if (!Array.isArray(v) || !v.every((f) => f && typeof f === 'object' && typeof f.name === 'string')) {
      throw new Error('tools must be a JSON list of {name, description, parameters}');
    }
    return v;
  }

  function setBusy(busy) {
    $('send').hidden = busy;
    $('stop').hidden = !busy;
    document.body.classList.toggle('busy', busy);
  }

  async function generate() {
    const c = conv();
    let tools;
    try { tools = toolsOf(c); } catch (e) { setStatus('Tools: ' + e.message, true); return; }
    const body = { messages: requestMessages(c), stream: true, stream_options: { include_usage: true } };
    for (const [k, v] of Object.entries(c.params || {})) if (v !== null && v !== undefined && v !== '') body[k] = v;
    if (tools) body.tools = tools.map((f) => ({ type: 'function', function: f }));
    const msg = { role: 'assistant', content: '' };
    c.messages.push(msg);
    const ctrl = new AbortController();
    state.ctrl = ctrl;
    state.streaming = { msg };
    setBusy(true);
    setStatus('');
    renderMessages();
    const node = $('messages').lastElementChild;
    const bodyNode = node.querySelector('.body'), statsNode = node.querySelector('.stats');
    let frame = 0, chunks = 0, tFirst = 0;
    const draw = () => {
      frame = 0;
      const box = $('messages');
      const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      fillBody(bodyNode, msg);
      if (atEnd) box.scrollTop = box.scrollHeight;
    };
    const t0 = performance.now();
    let retryWithKey = false;
    try {
      const resp = await fetch('/v1/chat/completions', { method: 'POST', headers: apiHeaders(), body: JSON.stringify(body), signal: ctrl.signal });
      if (resp.status === 401) {
        retryWithKey = true;
        throw new Error('the server wants an API key');
      }
      if (!resp.ok) {
        const err = await resp.json().catch(() => null);
        throw new Error(err?.error?.message || `HTTP ${resp.status}`);
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      const onEvent = (data) => {
        if (data === '[DONE]') return;
        const ev = JSON.parse(data);
        if (ev.error) throw new Error(ev.error.message || 'the server reported an error');
        if (!tFirst) tFirst = performance.now();
        if (ev.usage) {
          msg.stats = { prompt: ev.usage.prompt_tokens, completion: ev.usage.completion_tokens,
            cached: ev.usage.prompt_tokens_details?.cached_tokens || 0 };
        }
        const ch = ev.choices?.[0];
        if (!ch) return;
        const d = ch.delta || {};
        if (d.content) { msg.content += d.content; chunks++; }
        if (d.tool_calls?.length) {
          const f = d.tool_calls[0].function || {};
          msg.metadata = f.name || 'tool';
          msg.args = f.arguments || '{}';
          msg.content = toolCallCode(msg.args);
        }
        if (ch.finish_reason) msg.finish = ch.finish_reason;
        if (!frame) frame = requestAnimationFrame(draw);
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line.startsWith('data:')) onEvent(line.slice(5).trim());
        }
      }
    } catch (e) {
      if (e.name === 'AbortError') msg.stopped = true;
      else msg.error = String(e.message || e);
    }
    if (frame) cancelAnimationFrame(frame);
    const tEnd = performance.now();
    if (msg.stats) {
      const secs = (tEnd - (tFirst || t0)) / 1000;
      if (msg.stats.completion && secs > 0) msg.stats.tps = msg.stats.completion / secs;
    } else if (chunks) msg.stats = { completion: chunks, approx: true }; // stopped: no usage came
    state.ctrl = null;
    state.streaming = null;
    setBusy(false);
    if (retryWithKey) {
      c.messages.pop();
      localStorage.removeItem(KEY);
      askKey(generate);
    } else if (!msg.content && !msg.metadata && !msg.stopped && !msg.error) {
      msg.error = 'the reply was empty';
    }
    if (state.convs.includes(c)) { touch(c); renderList(); }
    if (state.current === c) {
      renderMessages();
      renderHeader();
    }
    if (state.current === c && !state.renaming) $('input').focus();
  }

  function stop() {
    if (state.ctrl) state.ctrl.abort();
  }

  function send() {
    const text = $('input').value;
    if (!text.trim() || state.ctrl) return;
    const c = conv();
    if (!c.messages.length && c.title === 'New chat') c.title = text.trim().split('\n')[0].slice(0, 48);
    c.messages.push({ role: 'user', content: text });
    $('input').value = '';
    touch();
    renderAll();
    generate();
  }

  function regenerate() {
    const c = conv();
    if (state.ctrl) return;
    while (c.messages.length && c.messages[c.messages.length - 1].role === 'assistant') c.messages.pop();
    if (!c.messages.length) return;
    touch();
    generate();
  }

  // ---- export and import (the format of the REPL's /save) ---------------------

  function exportMessages(c) {
    const out = [];
    const tools = toolsOf(c);
    if (c.system || tools) {
      const s = { role: 'system', content: c.system || state.settings?.tool_system_prompt || '' };
      if (tools) s.tools = tools;
      out.push(s);
    }
    for (const m of c.messages) {
      const x = { role: m.role, content: m.content || '' };
      if (m.metadata) x.metadata = m.metadata;
      out.push(x);
    }
    return out;
  }

  function exportConv() {
    const c = state.current;
    if (!c) return;
    let msgs;
    try { msgs = exportMessages(c); } catch (e) { setStatus('Export: ' + e.message, true); return; }
    const blob = new Blob([JSON.stringify(msgs, null, 2) + '\n'], { type: 'application/json' });
    const a = el('a', { href: URL.createObjectURL(blob), download: (c.title.replace(/[^\p{L}\p{N}_-]+/gu, '_').slice(0, 60) || 'conversation') + '.json' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  // importMessages turns a /save list into a conversation, or throws an error
  // that names the message at fault.
  function importMessages(list, title) {
    if (!Array.isArray(list)) throw new Error('want a JSON list of {role, content, metadata, tools}');
    if (list.length > MAX_IMPORT_MESSAGES) throw new Error(`too many messages (${list.length} > ${MAX_IMPORT_MESSAGES})`);
    const c = { id: 'c' + Date.now().toString(36) + Math.random().toString(36).slice(2, 8), title: title || 'Imported',
      system: '', tools: '', params: {}, messages: [], updated: Date.now() };
    list.forEach((m, i) => {
      if (!m || typeof m !== 'object') throw new Error(`message ${i}: not an object`);
      if (!['system', 'user', 'assistant', 'observation'].includes(m.role)) throw new Error(`message ${i}: unknown role ${JSON.stringify(m.role)} (want system, user, assistant or observation)`);
      if (typeof (m.content ?? '') !== 'string') throw new Error(`message ${i}: content is not a string`);
      if (m.metadata !== undefined && typeof m.metadata !== 'string') throw new Error(`message ${i}: metadata is not a string`);
      if (m.tools !== undefined && m.tools !== null && m.role !== 'system') throw new Error(`message ${i}: only a system message may carry tools`);
      if (m.role === 'system' && i === 0) {
        c.system = m.content || '';
        if (m.tools) c.tools = JSON.stringify(m.tools, null, 2);
        return;
      }
      const x = { role: m.role, content: m.content || '' };
      if (m.role === 'assistant' && m.metadata) {
        x.metadata = m.metadata;
        x.args = parseToolCall(x.content) ?? '{}';
      }
      c.messages.push(x);
    });
    return c;
  }

  async function importFile(file) {
    try {
      if (file.size > MAX_IMPORT_BYTES) throw new Error(`the file is larger than ${MAX_IMPORT_BYTES >> 20} MiB`);
      let list;
      try { list = JSON.parse(await file.text()); } catch (e) { throw new Error('not JSON: ' + e.message); }
      const c = importMessages(list, file.name.replace(/\.json$/i, ''));
      state.convs.unshift(c);
      state.current = c;
      save();
      renderAll();
      setStatus(`Imported ${c.messages.length} messages from ${file.name}.`);
    } catch (e) {
      setStatus(`Import ${file.name}: ${e.message}`, true);
    }
  }

  // ---- wiring ------------------------------------------------------------------

  function onInputKey(e) {
    if (e.key !== 'Enter' || e.shiftKey || e.altKey) return;
    // An IME uses Enter to commit its composition: that Enter never sends.
    if (e.isComposing || e.keyCode === 229) return;
    e.preventDefault();
    send();
  }

  function saveSetting(fn) {
    return () => { const c = conv(); fn(c); save(); };
  }

  function init() {
    loadConvs();
    $('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
    $('input').addEventListener('keydown', onInputKey);
    $('stop').addEventListener('click', stop);
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && state.ctrl) stop(); });
    $('new-chat').addEventListener('click', () => { if (state.ctrl) stop(); newConv(); save(); renderAll(); document.body.classList.remove('sidebar-open'); $('input').focus(); });
    $('search').addEventListener('input', (e) => { state.search = e.target.value; renderList(); });
    $('export').addEventListener('click', exportConv);
    $('import').addEventListener('click', () => $('import-file').click());
    $('import-file').addEventListener('change', (e) => { const f = e.target.files[0]; e.target.value = ''; if (f) importFile(f); });
    $('open-sidebar').addEventListener('click', () => { document.body.classList.add('sidebar-open'); $('new-chat').focus(); });
    $('close-sidebar').addEventListener('click', () => { document.body.classList.remove('sidebar-open'); $('open-sidebar').focus(); });
    $('settings-toggle').addEventListener('click', () => {
      const open = $('settings').hidden;
      $('settings').hidden = !open;
      $('settings-toggle').setAttribute('aria-expanded', String(open));
    });
    $('system').addEventListener('change', saveSetting((c) => { c.system = $('system').value; }));
    $('tools').addEventListener('change', saveSetting((c) => {
      c.tools = $('tools').value;
      try { toolsOf(c); setStatus(''); } catch (e) { setStatus('Tools: ' + e.message, true); }
    }));
    for (const k of ['temperature', 'top_p', 'max_tokens']) {
      $('p-' + k).addEventListener('change', saveSetting((c) => {
        const v = $('p-' + k).value;
        c.params = c.params || {};
        if (v === '') delete c.params[k]; else c.params[k] = k === 'max_tokens' ? parseInt(v, 10) : parseFloat(v);
      }));
    }
    $('key-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const k = $('key-input').value.trim();
      if (!k) return;
      localStorage.setItem(KEY, k);
      $('key-dialog').hidden = true;
      const retry = state.pendingRetry;
      state.pendingRetry = null;
      if (retry) Promise.resolve(retry()).catch((err) => setStatus(String(err.message || err), true));
      else $('input').focus();
    });
    renderAll();
    loadSettings().catch((e) => setStatus('Could not read the server settings: ' + e.message, true));
    $('input').focus();
  }

  // The functions the browser tests check directly.
  window.chatglmPage = { renderMarkdown, toolCallCode, parseToolCall, importMessages, exportMessages };
  init();
})();
