//! Rows in flight between the parser and a warehouse's bulk path: typed cells
//! in one flat vector, text in one arena, and each row's source line kept for
//! error reports. A batch is reused, so steady-state loading allocates nothing.

use super::Val;

/// One typed value; text lives in the batch's arena.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(i32),
    Ts(i64),
    TsTz(i64),
    Text(u32, u32),
    Dec(u32, u32),
    Json(u32, u32),
}

/// A batch of rows of the same width.
#[derive(Debug, Clone, Default)]
pub struct RowBatch {
    pub width: usize,
    cells: Vec<Cell>,
    /// Every text value of the batch, back to back (a `String`, so slices of it
    /// are `&str` without checking the bytes again).
    text: String,
    /// The source line of each row.
    pub lines: Vec<u64>,
    /// Rows rejected since the previous batch (quarantine keeps them).
    pub rejects: Vec<crate::error::RowError>,
}

impl RowBatch {
    pub fn new(width: usize) -> Self {
        RowBatch {
            width,
            cells: Vec::with_capacity(width * 4096),
            text: String::with_capacity(1 << 20),
            lines: Vec::with_capacity(4096),
            rejects: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.cells.clear();
        self.text.clear();
        self.lines.clear();
        self.rejects.clear();
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes of text held (to cap a batch's size).
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    fn push_text(&mut self, s: &str) -> (u32, u32) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        (start, s.len() as u32)
    }

    /// Appends one row; `vals.len()` must equal the width.
    pub fn push(&mut self, vals: &[Val], line: u64) {
        debug_assert_eq!(vals.len(), self.width);
        for v in vals {
            self.push_cell(v);
        }
        self.finish_row(line);
    }

    /// Ends the row whose cells were pushed one by one.
    pub fn finish_row(&mut self, line: u64) {
        debug_assert_eq!(self.cells.len(), (self.lines.len() + 1) * self.width);
        self.lines.push(line);
    }

    /// Drops every row, keeping the rejects.
    pub fn discard_rows(&mut self) {
        self.cells.clear();
        self.text.clear();
        self.lines.clear();
    }

    /// Drops the cells of a row that was not finished.
    pub fn discard_partial_row(&mut self) {
        let keep = self.lines.len() * self.width;
        self.cells.truncate(keep);
    }

    /// Appends one cell of the current row.
    pub fn push_cell(&mut self, v: &Val) {
        {
            let c = match *v {
                Val::Null => Cell::Null,
                Val::Int(i) => Cell::Int(i),
                Val::Float(f) => Cell::Float(f),
                Val::Bool(b) => Cell::Bool(b),
                Val::Date(d) => Cell::Date(d),
                Val::Ts(t) => Cell::Ts(t),
                Val::TsTz(t) => Cell::TsTz(t),
                Val::Text(s) => {
                    let (a, b) = self.push_text(s);
                    Cell::Text(a, b)
                }
                Val::Dec(s) => {
                    let (a, b) = self.push_text(s);
                    Cell::Dec(a, b)
                }
                Val::Json(s) => {
                    let (a, b) = self.push_text(s);
                    Cell::Json(a, b)
                }
            };
            self.cells.push(c);
        }
    }

    pub fn row(&self, i: usize) -> &[Cell] {
        &self.cells[i * self.width..(i + 1) * self.width]
    }

    fn str_at(&self, start: u32, len: u32) -> &str {
        &self.text[start as usize..(start + len) as usize]
    }

    /// The value of a cell of this batch.
    pub fn val(&self, c: Cell) -> Val<'_> {
        match c {
            Cell::Null => Val::Null,
            Cell::Int(i) => Val::Int(i),
            Cell::Float(f) => Val::Float(f),
            Cell::Bool(b) => Val::Bool(b),
            Cell::Date(d) => Val::Date(d),
            Cell::Ts(t) => Val::Ts(t),
            Cell::TsTz(t) => Val::TsTz(t),
            Cell::Text(a, b) => Val::Text(self.str_at(a, b)),
            Cell::Dec(a, b) => Val::Dec(self.str_at(a, b)),
            Cell::Json(a, b) => Val::Json(self.str_at(a, b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let mut b = RowBatch::new(3);
        b.push(&[Val::Int(1), Val::Text("héllo"), Val::Null], 2);
        b.push(&[Val::Dec("1.50"), Val::Text(""), Val::Bool(true)], 3);
        assert_eq!(b.len(), 2);
        let r: Vec<Val> = b.row(1).iter().map(|c| b.val(*c)).collect();
        assert_eq!(r, vec![Val::Dec("1.50"), Val::Text(""), Val::Bool(true)]);
        assert_eq!(b.val(b.row(0)[1]), Val::Text("héllo"));
        assert_eq!(b.lines, vec![2, 3]);
        assert_eq!(std::mem::size_of::<Cell>(), 16);
    }
}
