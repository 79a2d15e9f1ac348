//! Tries over vocabulary strings: [`PieceTrie`] (bytes; user symbols and special tokens) and
//! [`CharTrie`] (characters; the Viterbi lattice over the ~130k pieces).
//!
//! Both are built once from the keys sorted bytewise (= code point order), breadth first, so a
//! node's edges are contiguous. Walking either gives the same matches as SentencePiece's Darts
//! `traverse` over the same (valid UTF-8) keys: a piece can only end on a character boundary.
//! The character trie takes one step per character instead of three for CJK text and keeps each
//! edge's payload and child range in the edge itself, so a step touches one small slice.

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    first_edge: u32,
    n_edges: u32,
    /// Payload of the key ending here, or `NONE`.
    value: u32,
}

/// Immutable byte trie mapping keys to `u32` values.
#[derive(Debug, Clone)]
pub(crate) struct PieceTrie {
    nodes: Vec<Node>,
    labels: Vec<u8>,
    targets: Vec<u32>,
    root: Box<[u32; 256]>,
    /// `first_byte[b]`: some key starts with byte `b`.
    first_byte: [bool; 256],
}

impl PieceTrie {
    /// The root node id.
    pub(crate) const ROOT: u32 = 0;

    /// Build from `(key, value)` pairs; on duplicate keys the first pair wins. Empty keys are ignored.
    pub(crate) fn build(mut keys: Vec<(&[u8], u32)>) -> PieceTrie {
        keys.retain(|(k, _)| !k.is_empty());
        keys.sort_by(|a, b| a.0.cmp(b.0));
        keys.dedup_by(|b, a| a.0 == b.0);
        let mut trie = PieceTrie {
            nodes: vec![Node {
                first_edge: 0,
                n_edges: 0,
                value: NONE,
            }],
            labels: Vec::new(),
            targets: Vec::new(),
            root: Box::new([NONE; 256]),
            first_byte: [false; 256],
        };
        // Queue of (node, key range, depth): every key in the range shares the node's prefix.
        let mut queue = std::collections::VecDeque::new();
        queue.push_back((0u32, 0usize, keys.len(), 0usize));
        while let Some((node, lo, hi, depth)) = queue.pop_front() {
            let mut i = lo;
            // Sorted order puts the key equal to the prefix first.
            if i < hi && keys[i].0.len() == depth {
                trie.nodes[node as usize].value = keys[i].1;
                i += 1;
            }
            let first_edge = trie.labels.len() as u32;
            while i < hi {
                let b = keys[i].0[depth];
                let mut j = i + 1;
                while j < hi && keys[j].0[depth] == b {
                    j += 1;
                }
                let child = trie.nodes.len() as u32;
                trie.nodes.push(Node {
                    first_edge: 0,
                    n_edges: 0,
                    value: NONE,
                });
                trie.labels.push(b);
                trie.targets.push(child);
                queue.push_back((child, i, j, depth + 1));
                i = j;
            }
            let n = &mut trie.nodes[node as usize];
            n.first_edge = first_edge;
            n.n_edges = trie.labels.len() as u32 - first_edge;
        }
        let root = trie.nodes[0];
        for e in root.first_edge..root.first_edge + root.n_edges {
            let b = trie.labels[e as usize];
            trie.root[b as usize] = trie.targets[e as usize];
            trie.first_byte[b as usize] = true;
        }
        trie
    }

    /// Child of `node` along byte `b`.
    #[inline]
    pub(crate) fn child(&self, node: u32, b: u8) -> Option<u32> {
        if node == Self::ROOT {
            let c = self.root[b as usize];
            return (c != NONE).then_some(c);
        }
        let n = self.nodes.get(node as usize)?;
        let lo = n.first_edge as usize;
        let hi = lo + n.n_edges as usize;
        let labels = &self.labels[lo..hi];
        let pos = if labels.len() <= 12 {
            labels.iter().position(|&l| l == b)
        } else {
            labels.binary_search(&b).ok()
        };
        pos.map(|p| self.targets[lo + p])
    }

    /// Value stored at `node`, if a key ends there.
    #[inline]
    pub(crate) fn value(&self, node: u32) -> Option<u32> {
        let v = self.nodes.get(node as usize)?.value;
        (v != NONE).then_some(v)
    }

    /// Whether some key starts with byte `b`.
    #[inline]
    pub(crate) fn starts_with_byte(&self, b: u8) -> bool {
        self.first_byte[b as usize]
    }

    /// Longest key that is a prefix of `input`: `(length, value)`.
    pub(crate) fn longest_prefix(&self, input: &[u8]) -> Option<(usize, u32)> {
        let mut node = Self::ROOT;
        let mut best = None;
        for (i, &b) in input.iter().enumerate() {
            match self.child(node, b) {
                Some(c) => node = c,
                None => break,
            }
            if let Some(v) = self.value(node) {
                best = Some((i + 1, v));
            }
        }
        best
    }

    /// Exact lookup of a whole key.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &[u8]) -> Option<u32> {
        let mut node = Self::ROOT;
        for &b in key {
            node = self.child(node, b)?;
        }
        if key.is_empty() {
            None
        } else {
            self.value(node)
        }
    }
}

/// One edge of the character trie: its character, the piece id ending there (`NONE` if none)
/// and the range of the child's edges.
#[derive(Debug, Clone, Copy)]
struct Edge {
    ch: u32,
    value: u32,
    first: u32,
    len: u32,
}

/// Character trie mapping pieces to ids (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct CharTrie {
    edges: Vec<Edge>,
    /// Range of the root's edges.
    root_first: u32,
    root_len: u32,
    /// Edge index for each BMP character at the root (`NONE` = no piece starts with it).
    root_bmp: Vec<u32>,
}

/// A position in a [`CharTrie`] walk: the edges leaving the current node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CharCursor {
    first: u32,
    len: u32,
    at_root: bool,
}

impl CharTrie {
    /// Build from `(key, value)` pairs; on duplicate keys the first pair wins. Empty keys are ignored.
    pub(crate) fn build(mut keys: Vec<(&str, u32)>) -> CharTrie {
        keys.retain(|(k, _)| !k.is_empty());
        keys.sort_by(|a, b| a.0.cmp(b.0));
        keys.dedup_by(|b, a| a.0 == b.0);
        let chars: Vec<Vec<u32>> = keys
            .iter()
            .map(|(k, _)| k.chars().map(u32::from).collect())
            .collect();
        let mut edges: Vec<Edge> = Vec::new();
        // Queue of (edge leading to the node or NONE for the root, key range, depth).
        let mut queue = std::collections::VecDeque::new();
        queue.push_back((NONE, 0usize, keys.len(), 0usize));
        let (mut root_first, mut root_len) = (0, 0);
        while let Some((parent, lo, hi, depth)) = queue.pop_front() {
            let mut i = lo;
            // The key ending at this node sorts first; its id was stored on the parent edge.
            if i < hi && chars[i].len() == depth {
                i += 1;
            }
            let first = edges.len() as u32;
            while i < hi {
                let c = chars[i][depth];
                let mut j = i + 1;
                while j < hi && chars[j][depth] == c {
                    j += 1;
                }
                let value = if chars[i].len() == depth + 1 {
                    keys[i].1
                } else {
                    NONE
                };
                let idx = edges.len() as u32;
                edges.push(Edge {
                    ch: c,
                    value,
                    first: 0,
                    len: 0,
                });
                queue.push_back((idx, i, j, depth + 1));
                i = j;
            }
            let len = edges.len() as u32 - first;
            if parent == NONE {
                (root_first, root_len) = (first, len);
            } else {
                let e = &mut edges[parent as usize];
                (e.first, e.len) = (first, len);
            }
        }
        let mut root_bmp = vec![NONE; 0x10000];
        for idx in root_first..root_first + root_len {
            let c = edges[idx as usize].ch;
            if c < 0x10000 {
                root_bmp[c as usize] = idx;
            }
        }
        CharTrie {
            edges,
            root_first,
            root_len,
            root_bmp,
        }
    }

    /// A cursor at the root.
    #[inline]
    pub(crate) fn root(&self) -> CharCursor {
        CharCursor {
            first: self.root_first,
            len: self.root_len,
            at_root: true,
        }
    }

    /// Follow character `c` from `cur`: the piece id ending there (if any) and the new cursor,
    /// or `None` when no piece continues with `c`.
    #[inline]
    pub(crate) fn step(&self, cur: CharCursor, c: u32) -> Option<(Option<u32>, CharCursor)> {
        let idx = if cur.at_root && c < 0x10000 {
            let i = self.root_bmp[c as usize];
            if i == NONE {
                return None;
            }
            i as usize
        } else {
            let lo = cur.first as usize;
            let slice = &self.edges[lo..lo + cur.len as usize];
            let pos = if slice.len() <= 8 {
                slice.iter().position(|e| e.ch == c)
            } else {
                slice.binary_search_by_key(&c, |e| e.ch).ok()
            };
            lo + pos?
        };
        let e = self.edges[idx];
        Some((
            (e.value != NONE).then_some(e.value),
            CharCursor {
                first: e.first,
                len: e.len,
                at_root: false,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_lookups() {
        let keys: Vec<(&[u8], u32)> = vec![
            (b"ab", 1),
            (b"a", 0),
            (b"abc", 2),
            (b"b", 3),
            (b"", 9),
            (b"a", 7),
        ];
        let t = PieceTrie::build(keys);
        assert_eq!(t.longest_prefix(b"abcd"), Some((3, 2)));
        assert_eq!(t.longest_prefix(b"abx"), Some((2, 1)));
        assert_eq!(t.longest_prefix(b"x"), None);
        assert_eq!(t.get(b"a"), Some(0));
        assert_eq!(t.get(b"ac"), None);
        assert_eq!(t.get(b""), None);
        assert!(t.starts_with_byte(b'b') && !t.starts_with_byte(b'c'));
    }

    fn char_matches(t: &CharTrie, s: &str) -> Vec<(usize, u32)> {
        let mut cur = t.root();
        let mut out = Vec::new();
        for (n, c) in s.chars().enumerate() {
            match t.step(cur, u32::from(c)) {
                Some((v, next)) => {
                    if let Some(v) = v {
                        out.push((n + 1, v));
                    }
                    cur = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn char_trie_common_prefixes() {
        let keys: Vec<(&str, u32)> = vec![
            ("你好", 1),
            ("你", 0),
            ("你好吗", 2),
            ("𠀀x", 3),
            ("", 9),
            ("你", 7),
            ("a", 4),
        ];
        let t = CharTrie::build(keys);
        assert_eq!(char_matches(&t, "你好吗?"), vec![(1, 0), (2, 1), (3, 2)]);
        assert_eq!(char_matches(&t, "你们"), vec![(1, 0)]);
        assert_eq!(char_matches(&t, "𠀀x"), vec![(2, 3)]);
        assert_eq!(char_matches(&t, "b"), vec![]);
        let wide: Vec<String> = (0..300u32)
            .filter_map(|c| char::from_u32(0x4e00 + c))
            .map(|c| format!("a{c}"))
            .collect();
        let t = CharTrie::build(
            wide.iter()
                .enumerate()
                .map(|(i, k)| (k.as_str(), i as u32))
                .collect(),
        );
        for (i, k) in wide.iter().enumerate() {
            assert_eq!(char_matches(&t, k), vec![(2, i as u32)]);
        }
    }

    #[test]
    fn wide_nodes_use_binary_search() {
        let keys: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b'x', b]).collect();
        let t = PieceTrie::build(
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_slice(), i as u32))
                .collect(),
        );
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.get(k), Some(i as u32));
        }
        assert_eq!(t.get(b"x"), None);
    }
}
