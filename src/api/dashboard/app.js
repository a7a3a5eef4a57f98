'use strict';
// The relay dashboard: one EventSource on {base}/events, one snapshot of totals per second. Rates are the
// difference of two snapshots over their time difference, so the server keeps nothing per viewer. Everything the
// server sends is written with textContent (channel names and event names come from clients).

(function () {
  const BASE = document.body.dataset.base;
  const HISTORY = 60; // points per chart: one a second
  const LOG_ROWS = 30;
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const series = { connections: [], channels: [], publishes: [], deliveries: [] };
  let previous = null; // the last snapshot, for rates
  const appPrevious = new Map(); // app id -> { time_ms, publishes, deliveries }

  const fmt = new Intl.NumberFormat('en-US');
  const num = (n) => (n === null || n === undefined ? '–' : fmt.format(n));
  const rateText = (r) => (r === null ? '–' : r >= 100 ? fmt.format(Math.round(r)) : (Math.round(r * 10) / 10).toString());

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
  }

  function duration(secs) {
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    const s = secs % 60;
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${m}m`;
    if (m > 0) return `${m}m ${s}s`;
    return `${s}s`;
  }

  /** Per-second rate of a running total between two snapshots; null when unknown (first one, or a restart). */
  function rate(now, before, nowMs, beforeMs) {
    if (before === undefined || before === null || nowMs <= beforeMs) return null;
    if (now < before) return 0;
    return (now - before) / ((nowMs - beforeMs) / 1000);
  }

  function setText(id, text, value) {
    const el = $(id);
    if (!el) return;
    el.textContent = text;
    if (value !== undefined) el.dataset.value = String(value);
  }

  function push(name, v) {
    const s = series[name];
    s.push(v);
    while (s.length > HISTORY) s.shift();
  }

  /** An area chart of the last HISTORY points, scaled to its own maximum, with that maximum written on it. */
  function draw(name) {
    const svg = $(`chart-${name}`);
    const points = series[name];
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const W = 300;
    const H = 70;
    const top = 14;
    const values = points.map((p) => (p === null ? 0 : p));
    const max = Math.max(1, ...values);
    const step = W / (HISTORY - 1);
    const offset = HISTORY - values.length;
    const xy = values.map((v, i) => [(offset + i) * step, H - 1 - (v / max) * (H - top - 2)]);
    for (const y of [top, (top + H) / 2]) {
      const line = document.createElementNS(SVG, 'line');
      line.setAttribute('x1', '0');
      line.setAttribute('x2', String(W));
      line.setAttribute('y1', String(y));
      line.setAttribute('y2', String(y));
      line.setAttribute('class', 'grid');
      svg.appendChild(line);
    }
    if (xy.length > 1) {
      const path = xy.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
      const area = document.createElementNS(SVG, 'path');
      area.setAttribute('d', `${path} L${xy[xy.length - 1][0].toFixed(1)},${H} L${xy[0][0].toFixed(1)},${H} Z`);
      area.setAttribute('class', 'area');
      svg.appendChild(area);
      const line = document.createElementNS(SVG, 'path');
      line.setAttribute('d', path);
      line.setAttribute('class', 'line');
      svg.appendChild(line);
    }
    const label = document.createElementNS(SVG, 'text');
    label.setAttribute('x', String(W - 3));
    label.setAttribute('y', '10');
    label.setAttribute('class', 'max');
    label.textContent = `max ${rateText(max)}`;
    svg.appendChild(label);
  }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function fill(tbody, rows, columns, emptyText) {
    const frag = document.createDocumentFragment();
    if (rows.length === 0) {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      const td = cell(tr, emptyText);
      td.colSpan = columns;
      frag.appendChild(tr);
    }
    for (const r of rows) frag.appendChild(r);
    tbody.replaceChildren(frag);
  }

  function appRows(s) {
    return s.apps.map((a) => {
      const before = appPrevious.get(a.id);
      const publishes = a.publishes_rest + a.publishes_client;
      const pr = before ? rate(publishes, before.publishes, s.time_ms, before.time_ms) : null;
      const dr = before ? rate(a.deliveries, before.deliveries, s.time_ms, before.time_ms) : null;
      appPrevious.set(a.id, { time_ms: s.time_ms, publishes, deliveries: a.deliveries });
      const tr = document.createElement('tr');
      tr.dataset.app = a.id;
      cell(tr, a.enabled ? a.id : `${a.id} (disabled)`, 'name');
      cell(tr, num(a.connections), 'num');
      cell(tr, rateText(pr), 'num');
      cell(tr, rateText(dr), 'num');
      cell(tr, num(publishes), 'num');
      cell(tr, num(a.deliveries), 'num app-deliveries');
      return tr;
    });
  }

  function presenceRows(s) {
    const rows = [];
    for (const a of s.apps) {
      for (const p of a.presence || []) {
        const tr = document.createElement('tr');
        cell(tr, a.id, 'name');
        cell(tr, p.channel, 'channel');
        cell(tr, num(p.users), 'num');
        rows.push(tr);
      }
      const more = (a.presence_total || 0) - (a.presence || []).length;
      if (more > 0) {
        const tr = document.createElement('tr');
        tr.className = 'more';
        cell(tr, a.id, 'name');
        cell(tr, `… and ${num(more)} more`);
        cell(tr, '', 'num');
        rows.push(tr);
      }
    }
    return rows;
  }

  function logDetail(e) {
    switch (e.type) {
      case 'publish':
        return `${e.channel} · ${e.event} · ${bytes(e.size)} · ${e.source}`;
      case 'subscribe':
      case 'unsubscribe':
        return `${e.channel} · ${e.socket_id}`;
      case 'connection_opened':
      case 'connection_closed':
        return e.socket_id;
      case 'rate_limited':
        return `${e.events} event(s) refused`;
      case 'webhook':
        return `${e.url} · ${e.events} event(s), attempt ${e.attempt} · ${
          e.status !== undefined ? `HTTP ${e.status}` : e.error
        } · ${e.result}`;
      default:
        return '';
    }
  }

  function logRows(s) {
    const entries = [];
    for (const a of s.apps) for (const e of a.log || []) entries.push({ app: a.id, e });
    entries.sort((x, y) => y.e.time_ms - x.e.time_ms);
    return entries.slice(0, LOG_ROWS).map(({ app, e }) => {
      const tr = document.createElement('tr');
      tr.className = `log-${e.type}`;
      const t = new Date(e.time_ms);
      cell(tr, `${t.toLocaleTimeString('en-GB', { hour12: false })}.${String(t.getMilliseconds()).padStart(3, '0')}`, 'time');
      cell(tr, app, 'name');
      cell(tr, e.type.replace('_', ' '), 'type');
      cell(tr, logDetail(e), 'detail');
      return tr;
    });
  }

  function renderCluster(s) {
    const c = s.stats && s.stats.cluster;
    $('cluster-panel').hidden = !c;
    if (!c) return;
    const facts = [
      ['node', c.node],
      ['redis', c.redis_connected ? 'connected' : 'unreachable'],
      ['cluster connections', num(s.stats.connections)],
      ['cluster channels', num(s.stats.channels)],
      ['this node’s connections', num(c.node_connections)],
      ['published', num(c.published)],
      ['received', num(c.received)],
      ['dropped', num(c.dropped)],
      ['reconnects', num(c.reconnects)],
    ];
    const frag = document.createDocumentFragment();
    for (const [k, v] of facts) {
      const div = document.createElement('div');
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      if (k === 'redis') dd.className = c.redis_connected ? 'ok' : 'bad';
      div.append(dt, dd);
      frag.appendChild(div);
    }
    $('cluster').replaceChildren(frag);
  }

  function render(s) {
    const t = s.totals;
    const publishes = t.publishes_rest + t.publishes_client;
    const before = previous;
    const pr = before ? rate(publishes, before.totals.publishes_rest + before.totals.publishes_client, s.time_ms, before.time_ms) : null;
    const dr = before ? rate(t.deliveries, before.totals.deliveries, s.time_ms, before.time_ms) : null;
    const outRate = before ? rate(t.ws_bytes_sent, before.totals.ws_bytes_sent, s.time_ms, before.time_ms) : null;
    const inRate = before ? rate(t.ws_bytes_received, before.totals.ws_bytes_received, s.time_ms, before.time_ms) : null;
    previous = s;

    setText('node', s.node || `standalone · pid ${s.pid}`);
    setText('uptime', duration(s.uptime_secs));
    setText('cores', String(s.cores));
    const status = $('status');
    if (s.draining) {
      status.textContent = 'draining';
      status.className = 'pill pill-bad';
    } else {
      status.textContent = s.partial ? 'live (partial)' : 'live';
      status.className = s.partial ? 'pill pill-wait' : 'pill pill-ok';
    }

    setText('connections', num(s.connections), s.connections);
    setText('connections-opened', num(t.connections_opened));
    setText('connections-closed', num(t.connections_closed));
    setText('channels', num(s.channels), s.channels);
    setText('publishes-rate', rateText(pr), pr === null ? '' : pr);
    setText('publishes-total', num(publishes), publishes);
    setText('publishes-split', `${num(t.publishes_rest)} REST · ${num(t.publishes_client)} client · ${num(t.publishes_remote)} remote`);
    setText('deliveries-rate', rateText(dr), dr === null ? '' : dr);
    setText('deliveries-total', num(t.deliveries), t.deliveries);
    setText('bytes-out', outRate === null ? bytes(t.ws_bytes_sent) : `${bytes(outRate)}/s`);
    setText('bytes-in', inRate === null ? bytes(t.ws_bytes_received) : `${bytes(inRate)}/s`);
    setText('rate-limited', num(t.rate_limited));
    setText('slow-readers', num(t.slow_reader_cutoffs));
    const w = s.stats && s.stats.webhooks;
    $('webhooks-strip').hidden = !w;
    if (w) setText('webhooks', `${num(w.delivered)} delivered · ${num(w.held)} held · ${num(w.retries)} retries · ${num(w.dropped)} dropped`);

    push('connections', s.connections);
    push('channels', s.channels);
    push('publishes', pr);
    push('deliveries', dr);
    for (const name of Object.keys(series)) draw(name);

    const hidden = s.apps_total - s.apps.length;
    $('apps-note').textContent = hidden > 0 ? `${s.apps.length} most connected of ${s.apps_total}` : '';
    fill($('apps'), appRows(s), 6, 'no apps');
    fill($('presence'), presenceRows(s), 3, 'no occupied presence channels');
    fill($('log'), logRows(s), 4, 'no events yet');
    renderCluster(s);
  }

  function connect() {
    const source = new EventSource(`${BASE}/events`);
    const status = $('status');
    source.onmessage = (m) => {
      let s;
      try {
        s = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      render(s);
    };
    source.onerror = () => {
      // EventSource reconnects by itself after a dropped stream (relay ends each one after a while); it gives up
      // only when refused (CLOSED), e.g. after a password change: then a reload asks for credentials again.
      status.textContent = source.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting';
      status.className = 'pill pill-bad';
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    };
  }

  for (const name of Object.keys(series)) draw(name);
  connect();
})();
