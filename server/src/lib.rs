//! The gateway as a library: the modules `main.rs` runs, exposed so that the fuzz targets
//! (`fuzz/`) and benchmarks can reach the parsers and codecs without starting a process.

pub mod alarms;
pub mod commands;
pub mod config;
pub mod diagnostics;
pub mod events;
pub mod fd_budget;
pub mod gateway;
pub mod history;
pub mod http;
pub mod indicators;
pub mod journey;
pub mod monitoring;
pub mod opcua;
pub mod reload;
pub mod startup_pages;
pub mod storage;
pub mod streams;
pub mod visits;
