//! What one agent holds of one content, as the stores keep it.

use shoal_core::Bitfield;

/// The pieces one agent holds of one content. Complete holdings, the common case, carry no
/// bitfield.
#[derive(Debug, Clone)]
pub(in crate::store) enum Pieces {
    Complete,
    Partial(Box<Bitfield>),
}

impl Pieces {
    pub(in crate::store) fn from_bitfield(field: Bitfield) -> Self {
        if field.is_full() {
            Pieces::Complete
        } else {
            Pieces::Partial(Box::new(field))
        }
    }

    pub(in crate::store) fn count(&self, piece_count: u32) -> u32 {
        match self {
            Pieces::Complete => piece_count,
            Pieces::Partial(field) => field.count_ones(),
        }
    }
}
