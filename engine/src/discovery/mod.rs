//! Discovery: how a peer learns of other peers. Trackers (the native protocol's client side)
//! today; LAN multicast and peer exchange will live here too. Sans-IO: the reactor carries
//! the messages.

pub mod tracker_client;
