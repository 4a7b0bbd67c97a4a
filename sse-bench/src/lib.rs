//! `sse-bench`: a load tester for Server-Sent Events servers.
//!
//! Modelled on hatoo/oha: one task per connection ([`client`], with the
//! HTTP/1 reading in [`http1`] and the sequence checks in [`seq`]), every
//! sample sent to one aggregator task that owns the histograms
//! ([`aggregate`]), a publisher on a fixed schedule ([`publisher`]), the
//! figures gathered into a [`report`] and printed by [`print`]. [`run`]
//! ties the phases together; [`group`] spreads clients over worker
//! processes ([`worker`]) when asked.

pub mod aggregate;
pub mod chart;
pub mod churn;
pub mod cli;
pub mod client;
pub mod group;
pub mod http1;
pub mod limits;
pub mod origin;
pub mod payload;
pub mod print;
pub mod procstat;
pub mod progress;
pub mod publisher;
pub mod report;
pub mod run;
pub mod scenario;
pub mod seq;
pub mod worker;
