//! Discovery: how a peer learns of other peers. Trackers (the native protocol's client side)
//! and LAN multicast live here; peer exchange is part of the peer protocol
//! (`peer::swarm`). Sans-IO: the reactor carries the messages.

pub mod lan;
pub mod tracker_client;
