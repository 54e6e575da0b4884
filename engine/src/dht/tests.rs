//! Unit tests of the DHT node.
