//! Generic repositories (plain HTTP downloads, GitHub releases): no path is an index by format;
//! only the repository's `index_patterns` can make one, and warm has no index to read.

/// A plain file tree: every default of [`super::Format`].
pub struct Generic;

impl super::Format for Generic {}
