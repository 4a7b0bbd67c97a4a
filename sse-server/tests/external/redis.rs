//! Several server instances on one real Redis.
