// The apixo-watcher operator console. Plain JavaScript, no build step, no other host.
//
// It reads the intake's JSON API (the routes the CLI uses, plus GET /v1/status) with the
// intake token as a bearer token, and refreshes the view on screen every few seconds while the
// tab is visible. Everything shown is put in the page as text (textContent, text nodes): data
// never becomes markup. docs/console.md describes the page.
'use strict';

(() => {
  const TOKEN_KEY = 'apixo-watcher.token';
  const REFRESH_MS = 5000;
  const MODEL_STATS_MS = 60000;
  const PAGE_SIZE = 50;
  const MAX_PAGE_SIZE = 1000;
  const FALLBACK_TASK_STATES = [
    'pending', 'processing', 'succeeded', 'failed', 'timed_out', 'not_found', 'cancelled',
  ];
  const FALLBACK_DELIVERY_STATUSES = ['pending', 'retrying', 'succeeded', 'failed'];
  const ACTIVE_STATES = new Set(['pending', 'processing']);
  const TONE = {
    succeeded: 'ok',
    failed: 'bad',
    timed_out: 'bad',
    not_found: 'bad',
    cancelled: 'neutral',
    pending: 'wait',
    processing: 'wait',
    retrying: 'wait',
    retry: 'wait',
  };
  const IMAGE_PATH = /\.(png|jpe?g|gif|webp|avif|bmp)$/i;

  const authMode = (document.querySelector('meta[name="apixo-watcher-auth"]') || {}).content;

  // -- small helpers ---------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  // Builds an element. Strings among the children become text nodes; props become attributes
  // (set as values, never parsed as markup), except class, text, dataset and on* listeners.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'text') el.textContent = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function words(value) {
    return String(value).replace(/_/g, ' ');
  }

  function tone(value) {
    return TONE[value] || 'neutral';
  }

  // A state or status in words, with a colour as a second cue only.
  function badge(value) {
    return h('span', { class: `badge ${tone(value)}` }, words(value));
  }

  function code(text) {
    return h('code', null, text);
  }

  const LOCAL = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });

  const PRECISE = new Intl.DateTimeFormat(undefined, {
    month: 'short', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3,
  });

  function utc(date) {
    return date.toISOString().replace('T', ' ').replace('Z', ' UTC');
  }

  // A time in the viewer's local time; UTC on hover. `precise` adds milliseconds.
  function when(iso, precise) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return h('span', null, iso);
    return h('time', { datetime: iso, title: utc(date) }, (precise ? PRECISE : LOCAL).format(date));
  }

  function millis(ms) {
    if (typeof ms !== 'number') return '—';
    return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  function bytes(n) {
    if (typeof n !== 'number') return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
  }

  // Only http(s) URLs become links or image sources; anything else is shown as text.
  function webUrl(text) {
    try {
      const url = new URL(text);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch {
      return null;
    }
  }

  function outLink(text) {
    const href = typeof text === 'string' ? webUrl(text) : null;
    if (!href) return h('span', { class: 'break' }, String(text));
    return h('a', { href, class: 'break', rel: 'noopener noreferrer', target: '_blank' }, text);
  }

  function taskHref(id) {
    return `#/tasks/${encodeURIComponent(id)}`;
  }

  function json(value) {
    return h('pre', { class: 'json' }, JSON.stringify(value, null, 2));
  }

  function announce(message) {
    const region = $('announce');
    region.textContent = '';
    // A fresh text node in a cleared region is what screen readers announce.
    window.setTimeout(() => { region.textContent = message; }, 50);
  }

  // A table whose cells carry their column name (shown as a label at a phone's width).
  function table(caption, columns, rows, empty) {
    const head = h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c)));
    const body = h('tbody');
    if (!rows.length) {
      body.append(h('tr', null, h('td', { colspan: columns.length, class: 'empty' }, empty)));
    }
    for (const row of rows) {
      const cells = row.cells.map((cell, i) => h('td', { 'data-label': columns[i] }, cell));
      body.append(h('tr', { dataset: row.dataset || {} }, cells));
    }
    return h('table', { class: 'list' }, h('caption', { class: 'sr-only' }, caption),
      h('thead', null, head), body);
  }

  // Keeps keyboard focus on "the same" control across a re-render (data-key names it).
  function replaceKeepingFocus(container, ...nodes) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.dataset.key : undefined;
    container.replaceChildren(...nodes);
    if (key) {
      const again = [...container.querySelectorAll('[data-key]')].find((e) => e.dataset.key === key);
      if (again) again.focus();
    }
  }

  // -- the API ---------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  class AuthNeeded extends Error {}

  function token() {
    return window.sessionStorage.getItem(TOKEN_KEY) || '';
  }

  // API paths are relative to the page, so the console also works behind a proxy under a
  // sub-path (the page is at <base>/ui/, the API at <base>/v1/...).
  function apiUrl(path) {
    return new URL(`..${path}`, document.baseURI).href;
  }

  async function api(path, options = {}) {
    const headers = { Accept: 'application/json' };
    const sent = token();
    if (sent) headers.Authorization = `Bearer ${sent}`;
    const init = {
      method: options.method || 'GET',
      headers,
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    };
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(apiUrl(path), init);
    } catch {
      throw new ApiError(0, 'unreachable', 'the daemon does not answer');
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (response.status === 401) {
      askForToken(sent ? 'The daemon did not accept this token.' : '');
      throw new AuthNeeded('a token is needed');
    }
    if (!response.ok) {
      const detail = (data && data.error) || {};
      throw new ApiError(response.status, detail.code || `http_${response.status}`,
        detail.message || response.statusText || `HTTP ${response.status}`);
    }
    return data;
  }

  // -- state -----------------------------------------------------------------------------------
  const state = {
    status: null,
    statusError: null,
    models: null,
    modelsAt: 0,
    view: null,
    busy: false,
    timer: null,
  };

  // -- banners and header ----------------------------------------------------------------------
  function banner(kind, title, ...body) {
    return h('div', { class: `banner ${kind}`, role: kind === 'bad' ? 'alert' : 'status' },
      h('strong', null, title), ' ', body);
  }

  function renderHealth() {
    const status = state.status;
    const pill = $('readiness');
    const counters = $('counters');
    const banners = [];
    if (state.statusError) {
      pill.className = 'badge bad';
      pill.textContent = 'Unreachable';
      counters.textContent = '';
      banners.push(banner('bad', 'The daemon does not answer.',
        `${state.statusError}. The console tries again every ${REFRESH_MS / 1000} s.`));
    } else if (status) {
      pill.className = `badge ${status.ready ? 'ok' : 'bad'}`;
      pill.textContent = status.ready ? 'Ready' : 'Not ready';
      const p = status.polling || {};
      const d = status.delivery || {};
      counters.textContent = `watching ${p.watched || 0} tasks · ${d.pending || 0} deliveries queued`;
      if (!status.ready) {
        banners.push(banner('bad', 'Not ready:',
          h('ul', null, (status.reasons || []).map((r) => h('li', null, r)))));
      }
      if (p.credentials_paused) {
        banners.push(banner('bad', 'Polling is paused:',
          `${p.pause_reason || 'the upstream rejected the API key'}. `,
          'Every task is kept; polling resumes by itself once the key works again ',
          '(replace it and reload the daemon).'));
      }
      if (p.rate_limited_until) {
        banners.push(banner('warn', 'Slowed down: the upstream asked for fewer requests.',
          'Polling resumes at ', when(p.rate_limited_until), '.'));
      }
    }
    replaceKeepingFocus($('banners'), ...banners);
  }

  function renderUpdated() {
    const now = new Date();
    $('updated').replaceChildren('Updated ',
      h('time', { datetime: now.toISOString(), title: utc(now) }, now.toLocaleTimeString()));
  }

  async function loadStatus() {
    try {
      state.status = await api('/v1/status');
      state.statusError = null;
    } catch (error) {
      if (error instanceof AuthNeeded) throw error;
      state.statusError = error.message;
    }
    renderHealth();
    if (state.status && state.status.model_stats
        && Date.now() - state.modelsAt > MODEL_STATS_MS) {
      state.modelsAt = Date.now();
      try {
        const answer = await api('/v1/stats/models');
        state.models = (answer && answer.models) || [];
        if (state.view && state.view.models) renderModels(state.view.models);
      } catch (error) {
        if (error instanceof AuthNeeded) throw error;
        state.models = null;
      }
    }
  }

  function taskStates() {
    return (state.status && state.status.task_states) || FALLBACK_TASK_STATES;
  }

  function deliveryStatuses() {
    return (state.status && state.status.delivery_statuses) || FALLBACK_DELIVERY_STATUSES;
  }

  // -- routing ---------------------------------------------------------------------------------
  function parseRoute() {
    const raw = window.location.hash.replace(/^#/, '');
    const cut = raw.indexOf('?');
    const path = cut >= 0 ? raw.slice(0, cut) : raw;
    const params = new URLSearchParams(cut >= 0 ? raw.slice(cut + 1) : '');
    const parts = path.split('/').filter(Boolean);
    let limit = Number.parseInt(params.get('limit') || '', 10);
    if (!(limit >= 1 && limit <= MAX_PAGE_SIZE)) limit = PAGE_SIZE;
    if (parts[0] === 'tasks' && parts.length >= 2) {
      let id = parts.slice(1).join('/');
      try {
        id = decodeURIComponent(id);
      } catch {
        // keep it as it was typed
      }
      return { name: 'task', id };
    }
    if (parts[0] === 'deliveries') {
      return { name: 'deliveries', status: params.get('status') || '', limit };
    }
    return { name: 'tasks', state: params.get('state') || '', limit };
  }

  function listHash(base, key, value, limit) {
    const params = new URLSearchParams();
    if (value) params.set(key, value);
    if (limit !== PAGE_SIZE) params.set('limit', String(limit));
    const query = params.toString();
    return query ? `${base}?${query}` : base;
  }

  function markNav(name) {
    for (const link of document.querySelectorAll('[data-nav]')) {
      const current = link.dataset.nav === (name === 'task' ? 'tasks' : name);
      if (current) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }

  // -- a paged list (tasks or deliveries) ------------------------------------------------------
  // Keyset pages: the API hands out an opaque next_cursor; the cursors of the pages seen so far
  // are kept so "Newer" can go back.
  function pager(view) {
    const newer = h('button', {
      type: 'button', 'data-key': 'newer', disabled: view.page === 0,
      onclick: () => { view.page -= 1; refreshView(true); },
    }, '← Newer');
    const older = h('button', {
      type: 'button', 'data-key': 'older', disabled: !view.next,
      onclick: () => {
        view.cursors[view.page + 1] = view.next;
        view.page += 1;
        refreshView(true);
      },
    }, 'Older →');
    return h('nav', { class: 'pager', 'aria-label': 'Pages' }, newer,
      h('span', null, `Page ${view.page + 1}`), older);
  }

  function pageQuery(view, filterKey, filterValue) {
    const params = new URLSearchParams({ limit: String(view.limit) });
    if (filterValue) params.set(filterKey, filterValue);
    const cursor = view.cursors[view.page];
    if (cursor) params.set('cursor', cursor);
    return params.toString();
  }

  // A filter whose choices come from the daemon (GET /v1/status), so a state or status added
  // in a later version appears without a change here; `sync` refreshes them.
  function filterSelect(id, label, values, current, allLabel, onChange) {
    const select = h('select', { id, onchange: (e) => onChange(e.target.value) });
    let shown = '';
    const sync = (choices) => {
      const wanted = [...new Set([...choices, ...(current ? [current] : [])])];
      if (wanted.join() === shown) return;
      shown = wanted.join();
      select.replaceChildren(h('option', { value: '' }, allLabel),
        ...wanted.map((v) => h('option', { value: v, selected: v === current }, words(v))));
    };
    sync(values);
    return { node: h('div', { class: 'field' }, h('label', { for: id }, label), select), sync };
  }

  // -- the task list ---------------------------------------------------------------------------
  function tasksView(route) {
    const view = {
      title: 'Tasks', page: 0, cursors: [null], next: null, limit: route.limit, last: '',
    };
    const body = h('div', { class: 'list-body' });
    const models = h('section', { id: 'models', hidden: true, 'aria-labelledby': 'models-title' });
    const search = h('input', {
      id: 'search', type: 'search', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'the exact task id',
    });
    const searchForm = h('form', {
      role: 'search', class: 'field search',
      onsubmit: (e) => {
        e.preventDefault();
        const id = search.value.trim();
        if (id) window.location.hash = taskHref(id);
      },
    }, h('label', { for: 'search' }, 'Find a task'), search, h('button', { type: 'submit' }, 'Find'));
    const filter = filterSelect('state-filter', 'State', taskStates(), route.state, 'every state',
      (value) => { window.location.hash = listHash('#/tasks', 'state', value, view.limit); });

    view.models = models;
    view.node = h('section', { 'aria-labelledby': 'view-title' },
      h('h1', { id: 'view-title', tabindex: '-1' }, 'Tasks'),
      h('p', { class: 'hint' }, 'Newest registration first.'),
      h('div', { class: 'toolbar' }, filter.node, searchForm),
      body, models);

    view.refresh = async (force) => {
      const data = await api(`/v1/tasks?${pageQuery(view, 'state', route.state)}`);
      filter.sync(taskStates());
      const seen = JSON.stringify([view.page, data, state.models]);
      if (!force && seen === view.last) return;
      view.last = seen;
      view.next = data.next_cursor;
      const rows = data.tasks.map((t) => ({
        dataset: { taskId: t.task_id },
        cells: [
          h('a', { href: taskHref(t.task_id), class: 'break', 'data-key': `task:${t.task_id}` },
            t.task_id),
          t.model,
          badge(t.state),
          String(t.polls),
          when(t.registered_at),
          when(t.updated_at),
        ],
      }));
      const caption = route.state ? `Tasks in state ${words(route.state)}` : 'Tasks';
      const empty = route.state ? `No task is ${words(route.state)}.` : 'No task yet.';
      replaceKeepingFocus(body,
        table(caption, ['Task', 'Model', 'State', 'Polls', 'Registered', 'Updated'], rows, empty),
        pager(view));
      renderModels(models);
      if (!view.ready) {
        view.ready = true;
        performance.mark('apixo:list-ready');
        document.body.dataset.ready = 'tasks';
      }
    };
    return view;
  }

  // Per-model statistics of the adaptive strategy: shown only when the daemon serves them.
  function renderModels(section) {
    const models = state.models;
    if (!models || !models.length) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    const fixed = (v, digits = 1) => (typeof v === 'number' ? v.toFixed(digits) : '—');
    section.replaceChildren(
      h('h2', { id: 'models-title' }, 'Models'),
      table('Per-model statistics',
        ['Model', 'Strategy', 'Samples', 'p50 s', 'p90 s', 'p99 s', 'Polls per task',
          'Detection delay s'],
        models.map((m) => ({
          cells: [m.model, words(m.strategy || '—'), String(m.samples ?? '—'),
            fixed(m.duration_p50_s), fixed(m.duration_p90_s), fixed(m.duration_p99_s),
            fixed(m.polls_per_task, 2), fixed(m.detection_delay_mean_s, 2)],
        })), 'No finished tasks yet.'));
  }

  // -- one task --------------------------------------------------------------------------------
  function taskView(route) {
    const view = { title: `Task ${route.id}`, last: '', confirming: false };
    const body = h('div', { class: 'task-body' });
    view.node = h('section', { 'aria-labelledby': 'view-title' },
      h('p', null, h('a', { href: '#/tasks' }, '← All tasks')),
      h('h1', { id: 'view-title', tabindex: '-1' }, 'Task ', h('code', { class: 'break' }, route.id)),
      body);

    view.refresh = async (force) => {
      let task;
      try {
        task = await api(`/v1/tasks/${encodeURIComponent(route.id)}`);
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          view.last = '';
          replaceKeepingFocus(body, h('p', { class: 'empty', role: 'status' },
            'No task has the id ', code(route.id), '. Ids are matched exactly.'));
          return;
        }
        throw error;
      }
      const seen = JSON.stringify([task, view.confirming]);
      if (!force && seen === view.last) return;
      view.last = seen;
      replaceKeepingFocus(body, ...renderTask(task, view));
    };
    return view;
  }

  function renderTask(task, view) {
    const facts = [
      ['State', badge(task.state)],
      ['Model', task.model],
      ['Upstream state', task.upstream_state || '—'],
      ['Registered', when(task.registered_at)],
      ['Updated', when(task.updated_at)],
      ['Finished', when(task.finished_at)],
      ['Polls', String(task.polls)],
      ['Next poll', when(task.next_poll_at)],
      ['Source', task.source],
      ['Endpoints', task.endpoints ? task.endpoints.join(', ') : 'every subscribed endpoint'],
      ['Callback URL', task.callback_url ? outLink(task.callback_url) : '—'],
      ['Deadline', typeof task.deadline_seconds === 'number'
        ? `${task.deadline_seconds} s` : 'the model\'s'],
    ];
    if (task.last_error) facts.push(['Last upstream problem', task.last_error]);
    const out = [
      h('dl', { class: 'facts' }, facts.map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v)))),
    ];
    if (ACTIVE_STATES.has(task.state)) out.push(cancelControls(task, view));
    out.push(...renderResults(task));
    out.push(h('section', { 'aria-labelledby': 'timeline-title' },
      h('h2', { id: 'timeline-title' }, 'Timeline'), renderTimeline(task)));
    out.push(h('section', { 'aria-labelledby': 'deliveries-title' },
      h('h2', { id: 'deliveries-title' }, 'Deliveries'),
      task.deliveries.length
        ? task.deliveries.map((d) => renderDelivery(d, () => refreshView(true)))
        : h('p', { class: 'empty' }, 'No webhook for this task (yet).')));
    out.push(h('section', { 'aria-labelledby': 'metadata-title' },
      h('h2', { id: 'metadata-title' }, 'Metadata'),
      Object.keys(task.metadata || {}).length ? json(task.metadata) : h('p', { class: 'empty' }, 'None.')));
    if (task.events.length) {
      out.push(h('section', { 'aria-labelledby': 'events-title' },
        h('h2', { id: 'events-title' }, 'Webhook bodies'),
        task.events.map((e) => h('details', null,
          h('summary', null, code(e.type), ' · ', when(e.created_at), ' · ', code(e.id)),
          json(e.payload)))));
    }
    return out;
  }

  function cancelControls(task, view) {
    const say = (message) => { view.confirming = false; announce(message); refreshView(true); };
    if (!view.confirming) {
      return h('div', { class: 'actions' }, h('button', {
        type: 'button', class: 'danger', 'data-key': 'cancel',
        onclick: () => { view.confirming = true; refreshView(true).then(() => focusKey('confirm-cancel')); },
      }, 'Cancel watching…'));
    }
    return h('div', { class: 'actions confirm', role: 'group', 'aria-label': 'Confirm cancel' },
      h('span', null, 'Stop watching this task? No webhook will be sent for it.'),
      h('button', {
        type: 'button', class: 'danger', 'data-key': 'confirm-cancel',
        onclick: async (e) => {
          e.target.disabled = true;
          try {
            await api(`/v1/tasks/${encodeURIComponent(task.task_id)}`, { method: 'DELETE' });
            say(`Task ${task.task_id} is cancelled.`);
          } catch (error) {
            if (!(error instanceof AuthNeeded)) say(`Cancel failed: ${error.message}`);
          }
        },
      }, 'Yes, stop watching'),
      h('button', {
        type: 'button', 'data-key': 'keep',
        onclick: () => { view.confirming = false; refreshView(true).then(() => focusKey('cancel')); },
      }, 'Keep watching'));
  }

  function focusKey(key) {
    const el = [...document.querySelectorAll('[data-key]')].find((e) => e.dataset.key === key);
    if (el) el.focus();
  }

  // Result URLs (with image previews), mirrored files, or why there is no result.
  function renderResults(task) {
    const data = [...task.events].reverse()
      .map((e) => (e.payload && e.payload.data) || null)
      .find((d) => d && d.state !== undefined) || {};
    const urls = Array.isArray(data.result_urls) ? data.result_urls : [];
    const mirrored = Array.isArray(task.mirrored) ? task.mirrored
      : (Array.isArray(data.mirrored) ? data.mirrored : []);
    const mirrorError = task.mirror_error || data.mirror_error;
    const parts = [];
    if (urls.length) {
      parts.push(h('ul', { class: 'results' }, urls.map((u, i) => {
        const src = typeof u === 'string' ? webUrl(u) : null;
        const preview = src && IMAGE_PATH.test(new URL(src).pathname)
          ? h('img', {
            src, alt: `Preview of result ${i + 1}`, loading: 'lazy', referrerpolicy: 'no-referrer',
            onerror: (e) => { e.target.replaceWith(h('span', { class: 'muted' }, 'no preview')); },
          })
          : null;
        return h('li', null, preview, outLink(u));
      })));
    }
    if (mirrored.length) {
      parts.push(h('h3', null, 'Mirrored files'), table('Mirrored files',
        ['Source', 'Copy', 'Key', 'Size', 'Type', 'sha256'],
        mirrored.map((m) => ({
          cells: [outLink(m.source_url || ''), outLink(m.url || ''), m.key || '', bytes(m.bytes),
            m.content_type || '—', h('code', { class: 'break' }, m.sha256 || '')],
        })), ''));
    }
    if (mirrorError) {
      parts.push(h('p', { class: 'error' }, 'Mirroring failed: ', mirrorError.message || '',
        mirrorError.source_url ? [' (', outLink(mirrorError.source_url), ')'] : ''));
    }
    if (data.fail_code || data.fail_msg) {
      parts.push(h('p', null, 'The upstream says: ', code(data.fail_code || '—'), ' ',
        data.fail_msg || ''));
    }
    if (data.last_state !== undefined || data.watched_seconds !== undefined) {
      parts.push(h('p', null, `Last upstream state: ${data.last_state || 'none'}; watched for `,
        `${data.watched_seconds ?? '—'} s.`));
    }
    if (!parts.length) return [];
    return [h('section', { 'aria-labelledby': 'results-title' },
      h('h2', { id: 'results-title' }, 'Result'), parts)];
  }

  // Everything that happened to the task, oldest first.
  function renderTimeline(task) {
    const items = [{
      at: task.registered_at, order: 0, tone: 'neutral', title: 'Registered',
      text: [`from ${task.source === 'file' ? 'the tasks file' : 'the intake API'}, model `,
        code(task.model)],
    }];
    for (const c of task.state_changes) {
      items.push({
        at: c.at, order: 1, tone: tone(c.to_state), title: 'State changed',
        text: [badge(c.from_state), ' → ', badge(c.to_state), ` ${c.reason}`,
          c.upstream_state && !c.reason.includes(c.upstream_state)
            ? ` (upstream: ${c.upstream_state})` : ''],
      });
    }
    for (const e of task.events) {
      items.push({
        at: e.created_at, order: 2, tone: 'neutral', title: 'Event', text: [code(e.type)],
      });
    }
    for (const d of task.deliveries) {
      for (const a of d.attempt_log || []) {
        items.push({
          at: a.started_at, order: 3, tone: tone(a.outcome), title: `Delivery attempt ${a.number}`,
          text: [`to ${d.endpoint} (`, code(d.event_type), '): ', badge(a.outcome),
            a.status_code ? ` HTTP ${a.status_code}` : '', ` in ${millis(a.duration_ms)}`,
            a.error && a.error !== `HTTP ${a.status_code}` ? ` — ${a.error}` : ''],
        });
      }
    }
    items.sort((x, y) => (Date.parse(x.at) - Date.parse(y.at)) || (x.order - y.order));
    const polled = ACTIVE_STATES.has(task.state)
      ? [`${task.polls} times so far; next poll `, when(task.next_poll_at, true)]
      : [`${task.polls} times in all`];
    return h('ol', { class: 'timeline' },
      items.map((i) => h('li', { class: i.tone },
        h('span', { class: 'at' }, when(i.at, true)), h('strong', null, i.title), ' ', i.text)),
      h('li', { class: 'neutral' }, h('span', { class: 'at' }, ''), h('strong', null, 'Polled'),
        ' ', polled));
  }

  function redeliverButton(delivery, after) {
    if (delivery.status === 'pending') return null;
    return h('button', {
      type: 'button', 'data-key': `redeliver:${delivery.delivery_id}`,
      'aria-label': `Redeliver ${delivery.delivery_id}`,
      onclick: async (e) => {
        e.target.disabled = true;
        try {
          await api(`/v1/deliveries/${encodeURIComponent(delivery.delivery_id)}/redeliver`,
            { method: 'POST', body: {} });
          announce(`Redelivery of ${delivery.delivery_id} queued (same webhook-id).`);
        } catch (error) {
          if (error instanceof AuthNeeded) return;
          announce(`Redeliver failed: ${error.message}`);
        }
        after();
      },
    }, 'Redeliver');
  }

  function lastResult(d) {
    if (d.last_status_code) return `HTTP ${d.last_status_code}${d.last_error && d.last_error !== `HTTP ${d.last_status_code}` ? ` — ${d.last_error}` : ''}`;
    return d.last_error || '—';
  }

  function renderDelivery(d, after) {
    const attempts = d.attempt_log || [];
    return h('article', { class: 'delivery', 'data-delivery-id': d.delivery_id },
      h('h3', null, `${d.endpoint} · `, code(d.event_type), ' ', badge(d.status)),
      h('p', { class: 'muted' }, 'webhook-id ', code(d.webhook_id), ' · ', code(d.delivery_id),
        d.url ? [' · ', outLink(d.url)] : '',
        d.next_attempt_at ? [' · next attempt ', when(d.next_attempt_at)] : ''),
      table(`Attempts of ${d.delivery_id}`, ['#', 'Started', 'Outcome', 'HTTP', 'Latency', 'Error'],
        attempts.map((a) => ({
          cells: [String(a.number), when(a.started_at), badge(a.outcome),
            a.status_code ? String(a.status_code) : '—', millis(a.duration_ms), a.error || '—'],
        })), 'No attempt yet.'),
      h('div', { class: 'actions' }, redeliverButton(d, after)));
  }

  // -- the delivery log ------------------------------------------------------------------------
  function deliveriesView(route) {
    const view = {
      title: 'Deliveries', page: 0, cursors: [null], next: null, limit: route.limit, last: '',
    };
    const body = h('div', { class: 'list-body' });
    const filter = filterSelect('status-filter', 'Status', deliveryStatuses(), route.status,
      'every status',
      (value) => { window.location.hash = listHash('#/deliveries', 'status', value, view.limit); });
    const failedOnly = route.status === 'failed'
      ? h('a', { href: listHash('#/deliveries', 'status', '', route.limit) }, 'Show all')
      : h('a', { href: listHash('#/deliveries', 'status', 'failed', route.limit) }, 'Show failed only');
    view.node = h('section', { 'aria-labelledby': 'view-title' },
      h('h1', { id: 'view-title', tabindex: '-1' }, 'Deliveries'),
      h('p', { class: 'hint' }, 'Every webhook, newest first. Redeliver sends one again now, with the same webhook-id.'),
      h('div', { class: 'toolbar' }, filter.node, h('div', { class: 'field' }, failedOnly)),
      body);

    view.refresh = async (force) => {
      const data = await api(`/v1/deliveries?${pageQuery(view, 'status', route.status)}`);
      filter.sync(deliveryStatuses());
      const seen = JSON.stringify([view.page, data]);
      if (!force && seen === view.last) return;
      view.last = seen;
      view.next = data.next_cursor;
      const rows = data.deliveries.map((d) => ({
        dataset: { deliveryId: d.delivery_id },
        cells: [
          when(d.created_at),
          h('a', { href: taskHref(d.task_id), class: 'break' }, d.task_id),
          code(d.event_type),
          d.endpoint,
          badge(d.status),
          String(d.attempts),
          lastResult(d),
          when(d.next_attempt_at),
          redeliverButton(d, () => refreshView(true)) || '',
        ],
      }));
      const empty = route.status ? `No delivery is ${words(route.status)}.` : 'No delivery yet.';
      replaceKeepingFocus(body,
        table('Deliveries',
          ['Created', 'Task', 'Event', 'Endpoint', 'Status', 'Attempts', 'Last result',
            'Next attempt', 'Action'], rows, empty),
        pager(view));
    };
    return view;
  }

  // -- the view on screen ----------------------------------------------------------------------
  async function refreshView(force) {
    const view = state.view;
    if (!view) return;
    try {
      await view.refresh(force);
    } catch (error) {
      if (error instanceof AuthNeeded) return;
      if (view === state.view) {
        view.last = '';
        const target = view.node.querySelector('.list-body, .task-body');
        if (target) {
          replaceKeepingFocus(target,
            h('p', { class: 'error', role: 'alert' }, `Could not load: ${error.message}.`));
        }
      }
    }
  }

  async function show(focus) {
    const route = parseRoute();
    markNav(route.name);
    let view;
    if (route.name === 'task') view = taskView(route);
    else if (route.name === 'deliveries') view = deliveriesView(route);
    else view = tasksView(route);
    state.view = view;
    document.title = `${view.title} · apixo-watcher`;
    $('view').replaceChildren(view.node);
    if (focus) view.node.querySelector('h1').focus();
    await refreshView(true);
  }

  async function tick() {
    window.clearTimeout(state.timer);
    state.timer = null;
    if (document.hidden || !$('auth').hidden) return;
    if (!state.busy) {
      state.busy = true;
      try {
        await loadStatus();
        await refreshView(false);
        renderUpdated();
      } catch (error) {
        if (!(error instanceof AuthNeeded)) throw error;
      } finally {
        state.busy = false;
      }
    }
    schedule();
  }

  // Short polling, only while the tab is visible: one status call and one page per refresh,
  // whatever the number of tasks.
  function schedule() {
    window.clearTimeout(state.timer);
    state.timer = null;
    if (!document.hidden && $('auth').hidden) state.timer = window.setTimeout(tick, REFRESH_MS);
  }

  // -- the token -------------------------------------------------------------------------------
  function askForToken(message) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    window.clearTimeout(state.timer);
    state.timer = null;
    state.view = null;
    $('view').replaceChildren();
    $('forget').hidden = true;
    $('readiness').className = 'badge neutral';
    $('readiness').textContent = 'Token needed';
    $('counters').textContent = '';
    $('updated').textContent = '';
    $('banners').replaceChildren();
    const error = $('auth-error');
    error.textContent = message || '';
    error.hidden = !message;
    $('auth').hidden = false;
    $('token').value = '';
    $('token').focus();
  }

  async function start(focus) {
    $('auth').hidden = true;
    $('forget').hidden = !token();
    // The status and the view's data load side by side: one round trip less to a usable page.
    const status = loadStatus().catch((error) => {
      if (!(error instanceof AuthNeeded)) throw error;
    });
    await Promise.all([status, show(focus)]);
    if (!$('auth').hidden) return;
    renderUpdated();
    schedule();
  }

  function main() {
    $('auth-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const value = $('token').value.trim();
      if (!value) return;
      window.sessionStorage.setItem(TOKEN_KEY, value);
      start(true);
    });
    $('forget').addEventListener('click', () => askForToken(''));
    window.addEventListener('hashchange', () => {
      if ($('auth').hidden) show(true);
    });
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) {
        window.clearTimeout(state.timer);
        state.timer = null;
      } else {
        tick();
      }
    });
    if (authMode === 'token' && !token()) askForToken('');
    else start(false);
  }

  main();
})();
