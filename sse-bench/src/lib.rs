//! `sse-bench`: a load tester for Server-Sent Events servers.
//!
//! Modelled on hatoo/oha: one task per connection ([`client`]), every
//! sample sent to one aggregator task that owns the histograms
//! ([`aggregate`]), a publisher on a fixed schedule ([`publisher`]), and the
//! report printed at the end ([`report`]). [`run`] ties them together;
//! [`group`] spreads clients over worker processes when asked.

pub mod aggregate;
pub mod cli;
pub mod client;
pub mod group;
pub mod limits;
pub mod origin;
pub mod payload;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod run;
