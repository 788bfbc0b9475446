//! `fabrique-gateway`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use fabrique_gateway::config::{GatewayConfig, LogFormat};
use fabrique_gateway::{gateway, opcua};

// mimalloc 2 and its options (allocator.rs); `--no-default-features`: glibc's malloc.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
mod allocator;

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
    /// Client certificates in the configured `opcua.pki_dir`, and partner servers'
    /// certificates in its `partners/` sub-folder (the OPC UA client adapter's).
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
    // Client certificates of the server, then partner servers' certificates of the OPC UA
    // client adapter (`<pki_dir>/partners`), marked as such.
    let partners = pki::partners_dir(dir);
    let folders = [
        (dir.as_path(), ""),
        (partners.as_path(), " (partner server)"),
    ];
    let move_to = |thumbprint: &str, target: CertState| {
        let mut result = pki::move_to(dir, thumbprint, target).map(|e| (e, ""));
        if matches!(result, Err(pki::PkiError::Unknown { .. })) {
            if let Ok(found) = pki::move_to(&partners, thumbprint, target) {
                result = Ok((found, " (partner server)"));
            }
        }
        result
    };
    let result = match command {
        PkiCommand::List => folders.iter().try_for_each(|(folder, what)| {
            pki::list(folder).map(|entries| {
                for e in entries {
                    println!(
                        "{:<8} {} {}{what}",
                        e.state.as_str(),
                        e.thumbprint,
                        e.subject
                    );
                }
            })
        }),
        PkiCommand::Trust { thumbprint } => move_to(&thumbprint, CertState::Trusted)
            .map(|(e, what)| println!("trusted {} {}{what}", e.thumbprint, e.subject)),
        PkiCommand::Reject { thumbprint } => move_to(&thumbprint, CertState::Rejected)
            .map(|(e, what)| println!("rejected {} {}{what}", e.thumbprint, e.subject)),
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
