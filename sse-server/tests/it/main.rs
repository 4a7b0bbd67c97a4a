//! Integration tests: the real server on a socket, driven over HTTP.

mod support;
