//! `fabrique-gateway`: the command line.

mod commands;
mod config;
mod diagnostics;
mod gateway;
mod http;
mod opcua;
mod storage;
mod streams;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::GatewayConfig;

/// Industrial protocol gateway of the Fabrique mobile mini-factory.
///
/// With no subcommand, runs the gateway. Configuration: built-in defaults (the whole truck,
/// simulated), then `--config FILE`, then FABRIQUE__SECTION__KEY environment variables.
#[derive(Parser)]
#[command(name = "fabrique-gateway", version)]
struct Cli {
    /// TOML configuration file, layered over the built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and the tags it declares, then exit.
    Check,
    /// Print the merged configuration as TOML.
    PrintConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match GatewayConfig::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintConfig => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Command::Check => match gateway::plan(&config) {
            Ok(plan) => {
                println!(
                    "configuration OK: {} devices, {} tags",
                    config.effective_devices().len(),
                    plan.catalog.len()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        },
        Command::Run => run(config),
    }
}

fn run(config: GatewayConfig) -> ExitCode {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gateway::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
