// Shared helpers for the relay k6 scripts: env knobs, the Pusher WebSocket URL, REST signing and a
// compact end-of-test summary (k6 prints no default summary once a script exports handleSummary).

import crypto from 'k6/crypto';

export function envStr(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : v;
}

export function envNum(name, def) {
  const v = __ENV[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!isFinite(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

export function envInt(name, def) {
  return Math.floor(envNum(name, def));
}

// "20s", "1m30s", "500ms", "2h", or a bare number of seconds -> milliseconds.
export function durationMs(s) {
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  let seen = '';
  let m;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * unit[m[2]];
    seen += m[0];
  }
  if (seen !== s) throw new Error(`cannot parse duration "${s}" (use e.g. 20s, 1m30s, 500ms)`);
  return total;
}

export function msToDuration(ms) {
  return `${Math.max(0, Math.ceil(ms))}ms`;
}

export function target() {
  return {
    host: envStr('HOST', '127.0.0.1'),
    port: envInt('PORT', 6001),
    appId: envStr('APP_ID', 'app-id'),
    appKey: envStr('APP_KEY', 'app-key'),
    appSecret: envStr('APP_SECRET', 'app-secret'),
  };
}

export function wsUrl(t) {
  return `ws://${t.host}:${t.port}/app/${encodeURIComponent(t.appKey)}?protocol=7&client=k6&version=1.0`;
}

// Signed URL for POST /apps/{id}/events (Pusher REST auth, protocol docs/protocol.md#rest-signing):
// string to sign = "POST\n<path>\n<query without auth_signature, keys sorted, values unescaped>".
export function signedEventsUrl(t, body) {
  const path = `/apps/${t.appId}/events`;
  const params = {
    auth_key: t.appKey,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    body_md5: crypto.md5(body, 'hex'),
  };
  const keys = Object.keys(params).sort();
  const toSign = keys.map((k) => `${k}=${params[k]}`).join('&');
  const sig = crypto.hmac('sha256', t.appSecret, `POST\n${path}\n${toSign}`, 'hex');
  const wire = keys.map((k) => `${k}=${encodeURIComponent(params[k])}`).join('&');
  return `http://${t.host}:${t.port}${path}?${wire}&auth_signature=${sig}`;
}

// ---- end-of-test summary -------------------------------------------------------------------------

// Round for display: fmtMs(8.549999) -> "8.55".
export function fmtMs(v) {
  return v === undefined || v === null ? 'n/a' : String(Math.round(v * 100) / 100);
}

function fmtNum(v, digits) {
  if (v === undefined || v === null || !isFinite(v)) return String(v);
  return Number(v).toFixed(digits);
}

function fmtMetric(m, trendStats) {
  const v = m.values;
  switch (m.type) {
    case 'counter':
      if (m.contains === 'data') return `${v.count} B  ${fmtNum(v.rate / 1024, 1)} KiB/s`;
      return `count=${v.count} rate=${fmtNum(v.rate, 1)}/s`;
    case 'rate':
      return `${fmtNum(v.rate * 100, 2)}% (${v.passes} true / ${v.fails} false)`;
    case 'gauge':
      return `value=${v.value} min=${v.min} max=${v.max}`;
    case 'trend': {
      const unit = m.contains === 'time' ? 'ms' : '';
      const order = (trendStats || []).filter((k) => k in v);
      const keys = order.concat(Object.keys(v).filter((k) => order.indexOf(k) < 0).sort());
      return keys
        .map((k) => `${k}=${fmtNum(v[k], 2)}${unit}`)
        .join(' ');
    }
    default:
      return JSON.stringify(v);
  }
}

// Text summary of every metric (threshold marks: ✓ passed, ✗ failed) plus script-specific lines.
export function renderSummary(data, title, extraLines) {
  const out = [];
  out.push('');
  out.push(`==== ${title} ====`);
  const names = Object.keys(data.metrics).sort();
  const stats = (data.options && data.options.summaryTrendStats) || [];
  const width = Math.min(40, Math.max(...names.map((n) => n.length)));
  let failed = 0;
  const thresholdLines = [];
  for (const name of names) {
    const m = data.metrics[name];
    let mark = ' ';
    if (m.thresholds) {
      const all = Object.keys(m.thresholds);
      const bad = all.filter((t) => !m.thresholds[t].ok);
      mark = bad.length ? '✗' : '✓';
      failed += bad.length;
      for (const t of all) thresholdLines.push(`  ${m.thresholds[t].ok ? '✓' : '✗'} ${name}: ${t}`);
    }
    out.push(`${mark} ${name.padEnd(width, '.')}: ${fmtMetric(m, stats)}`);
  }
  out.push('');
  out.push('thresholds:');
  out.push(...thresholdLines);
  if (extraLines && extraLines.length) {
    out.push('');
    out.push(...extraLines);
  }
  out.push('');
  out.push(failed ? `RESULT: ${failed} threshold(s) FAILED` : 'RESULT: all thresholds passed');
  out.push('');
  return out.join('\n');
}

export function summaryOutputs(data, text) {
  const res = { stdout: text };
  const json = envStr('SUMMARY_JSON', '');
  if (json) res[json] = JSON.stringify(data, null, 2);
  return res;
}
