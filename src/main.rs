//! The `kappa-operator` command: parse arguments, call into the library.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kappa-operator", version, about = "Kappa-architecture pipelines on Kubernetes: replay, verify, cut over")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CRD as multi-document YAML (`kappa-operator crd | kubectl apply -f -`).
    Crd {
        /// Write one file per CRD into this folder instead.
        #[arg(long)]
        output_dir: Option<std::path::PathBuf>,
    },
}

fn main() {
    match Cli::parse().command {
        Command::Crd { output_dir: None } => print!("{}", kappa_operator::api::crds_yaml()),
        Command::Crd { output_dir: Some(dir) } => {
            for crd in kappa_operator::api::crds() {
                let path = dir.join(kappa_operator::api::crd_file_name(&crd));
                if let Err(e) = std::fs::write(&path, kappa_operator::api::crd_yaml(&crd)) {
                    eprintln!("error: writing {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
        }
    }
}
