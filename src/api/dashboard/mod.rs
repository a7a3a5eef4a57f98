//! The dashboard (`RELAY_DASHBOARD_*`): one page with embedded assets behind HTTP Basic authentication, and a
//! server-sent event stream of live figures.

use std::rc::Rc;

use monoio::io::AsyncWriteRent;

use crate::runtime::core::Core;

/// Writes the live figures as server-sent events until the client goes away or the server drains.
pub async fn stream_events<S: AsyncWriteRent>(core: &Rc<Core>, stream: &mut S) {
    let _ = (core, stream);
}
