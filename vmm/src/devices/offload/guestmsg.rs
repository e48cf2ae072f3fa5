//! Guest-to-guest messages (docs/offload-device.md: requests `GUEST_MSG` 10 and
//! `GUEST_MSG_RET` 11, event `GUEST_MSG_IN` 5): a driver sends a small message of some `kind`
//! to another node's driver and gets its reply (status and body) back. The exchange is a ping
//! with a kind and a status: the same parking of the request, the same bound on outstanding
//! exchanges, and the same transport request with a timeout (see `cluster.rs`), so a lost or
//! silent peer ends it with `-ECONNRESET` or `-ETIMEDOUT`.

use super::protocol::{self, errno};
use super::{Chain, OffloadDevice, Outbound, MAX_BACKLOG};

impl OffloadDevice {
    /// `GUEST_MSG`: sends `body` of `kind` to `node`'s guest; the response comes with the reply.
    pub(super) fn start_guest_msg(
        &mut self,
        chain: Chain,
        tag: u64,
        node: u32,
        kind: u32,
        body: Vec<u8>,
        out: &mut Vec<Outbound>,
    ) -> bool {
        if body.len() > protocol::MAX_GUEST_MSG {
            return self.respond(&chain, tag, -errno::EMSGSIZE, &[]);
        }
        // The reply's size is unknown until it comes: a response header must fit now; a
        // reply larger than the buffers becomes -EMSGSIZE then.
        let room = protocol::RESP_HEADER_LEN;
        self.start_exchange(chain, tag, node, room, out, |id| Outbound::GuestMsg {
            node,
            id,
            kind,
            body,
        })
    }

    /// `GUEST_MSG_RET`: the guest's reply to the message behind `token`; returns the request's
    /// status (`-ENOENT` for a token this device did not hand out for a guest message, or
    /// one that expired; `-EMSGSIZE` for a reply too large).
    pub(super) fn guest_msg_ret(
        &mut self,
        token: u64,
        status: i32,
        body: Vec<u8>,
        out: &mut Vec<Outbound>,
    ) -> i32 {
        if body.len() > protocol::MAX_GUEST_REPLY {
            return -errno::EMSGSIZE;
        }
        match self.take_token(token, true) {
            Some((node, request)) => {
                out.push(Outbound::GuestMsgRet {
                    node,
                    request,
                    status,
                    body,
                });
                0
            }
            None => -errno::ENOENT,
        }
    }

    /// A message from `src`'s guest: a `GUEST_MSG_IN` event (payload: u32 kind, u32 reserved,
    /// body) with a token for the reply. With the event backlog full it is dropped: the
    /// sender's request then times out.
    pub(super) fn guest_msg_in(&mut self, src: u32, request: u64, kind: u32, body: &[u8]) {
        if self.backlog.len() >= MAX_BACKLOG || body.len() > protocol::MAX_GUEST_MSG {
            self.warn.warn(format_args!(
                "offload: guest not taking events; message from node {src} dropped"
            ));
            return;
        }
        let token = self.hand_out_token(src, request, true);
        let mut payload = Vec::with_capacity(8 + body.len());
        payload.extend_from_slice(&kind.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.extend_from_slice(body);
        let ev = protocol::encode_event(protocol::EVENT_GUEST_MSG_IN, src, token, &payload);
        self.push_event(ev);
    }
}
