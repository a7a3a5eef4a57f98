/*
 * relay-recovery: gets stock pusher-js (and Laravel Echo, which runs on it) the events it missed while its
 * connection was down, from a relay server whose app keeps history (RELAY_HISTORY_ENABLED=true).
 *
 * relay gives every live event of such an app an extra top-level "id". This helper remembers the last id per
 * channel, adds it as `last_event_id` to every resubscription pusher-js sends after a reconnect, and relay replays
 * what was missed before the live events resume, then sends `relay:recovery` on the channel:
 * {"recovered": true|false, "replayed": N}. recovered=false means the gap could not be filled (the id is too old,
 * or the server restarted): reload the channel's state from your backend.
 *
 *   const Pusher = require('pusher-js');              // or the global Pusher in a browser, before new Echo(...)
 *   const recovery = require('./relay-recovery').enableRecovery(Pusher, {
 *     onRecovery: (channel, { recovered, replayed }) => { if (!recovered) reloadState(channel); },
 *   });
 *   const pusher = new Pusher(key, { wsHost, wsPort, forceTLS: false, enabledTransports: ['ws', 'wss'] });
 *
 * It works at the WebSocket level (Pusher.Runtime.createWebSocket), so it needs no change to pusher-js and works
 * for every Pusher instance made after enableRecovery; WebSocket transports only (no HTTP fallbacks). No
 * dependencies. Channels can also bind 'relay:recovery' themselves.
 */
(function (root, factory) {
  if (typeof module === 'object' && module.exports) module.exports = factory();
  else root.RelayRecovery = factory();
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  /** The app key in a pusher-js socket URL (`.../app/{key}?...`), so two apps' channels never mix. */
  function appOf(url) {
    var m = /\/app\/([^/?#]+)/.exec(String(url));
    return m ? m[1] : '';
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return null;
    }
  }

  /**
   * Turns recovery on for every Pusher connection made from now on. Options:
   *   onRecovery(channel, {recovered, replayed}): called after each replay;
   *   store: {get(key), set(key, id), delete(key)} to keep ids elsewhere (default: in memory).
   * Returns {lastEventId(channel, appKey?), forget(channel, appKey?), disable()}.
   */
  function enableRecovery(Pusher, options) {
    options = options || {};
    var runtime = Pusher && Pusher.Runtime;
    if (!runtime || typeof runtime.createWebSocket !== 'function') {
      throw new Error('relay-recovery: this pusher-js has no Runtime.createWebSocket to hook');
    }
    var memory = new Map();
    var store = options.store || {
      get: function (k) { return memory.get(k); },
      set: function (k, v) { memory.set(k, v); },
      delete: function (k) { memory.delete(k); },
    };
    var lastApp = '';
    var key = function (app, channel) { return app + '\n' + channel; };
    var original = runtime.createWebSocket;

    runtime.createWebSocket = function (url) {
      var socket = original.apply(this, arguments);
      var app = appOf(url);
      lastApp = app;
      var send = socket.send;
      // Outgoing: a subscribe to a channel we have seen events on asks for what came after the last one; an
      // explicit unsubscribe forgets the channel (a later subscribe is a fresh start).
      socket.send = function (data) {
        var msg = typeof data === 'string' ? parse(data) : null;
        if (msg && msg.data && typeof msg.data === 'object' && typeof msg.data.channel === 'string') {
          if (msg.event === 'pusher:subscribe') {
            var last = store.get(key(app, msg.data.channel));
            if (last) {
              msg.data.last_event_id = last;
              data = JSON.stringify(msg);
            }
          } else if (msg.event === 'pusher:unsubscribe') {
            store.delete(key(app, msg.data.channel));
          }
        }
        return send.call(socket, data);
      };
      // Incoming: every event with an id moves its channel's mark; recovery reports go to the app.
      socket.addEventListener('message', function (ev) {
        var msg = parse(ev.data);
        if (!msg || typeof msg.channel !== 'string') return;
        if (typeof msg.id === 'string') store.set(key(app, msg.channel), msg.id);
        if (msg.event === 'relay:recovery' && typeof options.onRecovery === 'function') {
          options.onRecovery(msg.channel, parse(msg.data) || {});
        }
      });
      return socket;
    };

    return {
      lastEventId: function (channel, appKey) { return store.get(key(appKey || lastApp, channel)); },
      forget: function (channel, appKey) { store.delete(key(appKey || lastApp, channel)); },
      disable: function () { runtime.createWebSocket = original; },
    };
  }

  return { enableRecovery: enableRecovery };
});
