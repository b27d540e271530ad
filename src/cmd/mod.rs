//! One module per subcommand.

pub(crate) mod admin;
pub(crate) mod certs;
pub(crate) mod check;
pub(crate) mod checkpoint;
pub(crate) mod checkpoint_bench;
pub(crate) mod config;
pub(crate) mod decide;
pub(crate) mod demo;
pub(crate) mod dynamodb;
pub(crate) mod dynamodb_bench;
pub(crate) mod events;
pub(crate) mod load;
pub(crate) mod seed;
pub(crate) mod serve;
pub(crate) mod site;
