//! `fabrique-gateway`: the command line.

mod commands;
mod config;
mod diagnostics;
mod events;
mod fd_budget;
mod gateway;
mod history;
mod http;
mod indicators;
mod journey;
mod monitoring;
mod opcua;
mod reload;
mod storage;
mod streams;
mod visits;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{GatewayConfig, LogFormat};

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
    /// Read a password on stdin, print its Argon2 hash for `[[opcua.users]] password_hash`:
    /// `echo -n secret | fabrique-gateway hash-password`.
    HashPassword,
    /// Client certificates in the configured `opcua.pki_dir`.
    #[command(subcommand)]
    Pki(PkiCommand),
}

#[derive(Subcommand)]
enum PkiCommand {
    /// One line per certificate: state (trusted, rejected, issuer), SHA-1 thumbprint, subject.
    List,
    /// Trust a client certificate (takes effect on its next connection, no restart).
    Trust { thumbprint: String },
    /// Reject a client certificate.
    Reject { thumbprint: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Hashing a password needs no configuration (and must work before one is valid).
    if matches!(cli.command, Some(Command::HashPassword)) {
        return hash_password();
    }
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
                opcua::standard::check_config(&config, &plan.catalog)
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        },
        Command::HashPassword => hash_password(),
        Command::Pki(command) => pki(&config, command),
        Command::Run => run(config, cli.config),
    }
}

fn hash_password() -> ExitCode {
    let mut password = String::new();
    if let Err(error) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut password) {
        eprintln!("error: cannot read the password from stdin: {error}");
        return ExitCode::from(2);
    }
    // `echo secret |` adds a newline nobody means as part of the password.
    let password = password
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&password);
    if password.is_empty() {
        eprintln!("error: empty password (usage: echo -n secret | fabrique-gateway hash-password)");
        return ExitCode::from(2);
    }
    match opcua::security::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: cannot hash the password: {error}");
            ExitCode::FAILURE
        }
    }
}

fn pki(config: &GatewayConfig, command: PkiCommand) -> ExitCode {
    use opcua::pki::{self, CertState};
    let dir = &config.opcua.pki_dir;
    let result = match command {
        PkiCommand::List => pki::list(dir).map(|entries| {
            for e in entries {
                println!("{:<8} {} {}", e.state.as_str(), e.thumbprint, e.subject);
            }
        }),
        PkiCommand::Trust { thumbprint } => pki::move_to(dir, &thumbprint, CertState::Trusted)
            .map(|e| println!("trusted {} {}", e.thumbprint, e.subject)),
        PkiCommand::Reject { thumbprint } => pki::move_to(dir, &thumbprint, CertState::Rejected)
            .map(|e| println!("rejected {} {}", e.thumbprint, e.subject)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(config: GatewayConfig, config_path: Option<std::path::PathBuf>) -> ExitCode {
    use tracing_subscriber::prelude::*;
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => match EnvFilter::try_new(&config.log.level) {
            Ok(filter) => filter,
            Err(error) => {
                eprintln!("error: invalid `log.level` `{}`: {error}", config.log.level);
                return ExitCode::from(2);
            }
        },
    };
    // Loading the companion NodeSets' types, async-opcua warns about every node those NodeSets
    // reach twice hierarchically (legal in OPC UA): noise at every start, unless asked for.
    let filter = if filter.to_string().contains("opcua_server") {
        filter
    } else {
        filter.add_directive(
            "opcua_server::address_space=error"
                .parse()
                .expect("a valid directive"),
        )
    };
    let logs = match config.log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        // Client addresses for the failed-login log, whatever the log level.
        .with(opcua::peers::PeerLayer.with_filter(opcua::peers::PeerLayer::filter()))
        .init();
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
    match runtime.block_on(gateway::run(config, config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
