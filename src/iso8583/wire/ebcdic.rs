//! EBCDIC: one byte per character, translated to and from Latin-1 through the code page's
//! tables.

use crate::iso8583::ebcdic_tables::{
    CP1047_FROM_LATIN1, CP1047_TO_LATIN1, CP500_FROM_LATIN1, CP500_TO_LATIN1,
};
use crate::iso8583::field::CodePage;

#[inline]
pub(crate) fn ebcdic_to_latin1(page: CodePage, b: u8) -> u8 {
    match page {
        CodePage::Cp500 => CP500_TO_LATIN1[usize::from(b)],
        CodePage::Cp1047 => CP1047_TO_LATIN1[usize::from(b)],
    }
}

#[inline]
pub(crate) fn latin1_to_ebcdic(page: CodePage, b: u8) -> u8 {
    match page {
        CodePage::Cp500 => CP500_FROM_LATIN1[usize::from(b)],
        CodePage::Cp1047 => CP1047_FROM_LATIN1[usize::from(b)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebcdic_tables_are_inverse() {
        for page in [CodePage::Cp500, CodePage::Cp1047] {
            for b in 0..=255u8 {
                assert_eq!(latin1_to_ebcdic(page, ebcdic_to_latin1(page, b)), b);
            }
            assert_eq!(latin1_to_ebcdic(page, b'0'), 0xF0);
            assert_eq!(latin1_to_ebcdic(page, b'A'), 0xC1);
            assert_eq!(latin1_to_ebcdic(page, b' '), 0x40);
        }
        // The two pages differ on brackets.
        assert_eq!(latin1_to_ebcdic(CodePage::Cp500, b'['), 0x4A);
        assert_eq!(latin1_to_ebcdic(CodePage::Cp1047, b'['), 0xAD);
    }
}
