//! One module per subcommand.

pub(crate) mod decide;
pub(crate) mod site;
