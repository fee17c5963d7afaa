//! Tokenizers from `tokenizer.json` (the `tokenizers` crate), with the six tags of the parallel
//! format added as single special tokens.

use crate::layout::TagIds;
use anyhow::{Context, Result, anyhow};
use prl_schema::parallel::TAGS;
use std::collections::BTreeSet;
use std::path::Path;
use tokenizers::{AddedToken, Tokenizer};

pub const PAD: &str = "<pad>";
pub const EOS: &str = "<eos>";
const UNK: &str = "<unk>";

pub struct PrlTokenizer {
    inner: Tokenizer,
    /// The end-of-sequence token's text.
    pub eos_token: String,
    pub tags: TagIds,
    pub open_summary: i64,
    pub close_summary: i64,
    pub eos: i64,
    pub pad: i64,
}

impl PrlTokenizer {
    /// Loads `tokenizer.json` and adds whichever tags it lacks. Returns the tokenizer and how many
    /// tokens were added (the model's vocabulary must grow by as many).
    pub fn load(path: &Path, eos: &str) -> Result<(Self, usize)> {
        let inner =
            Tokenizer::from_file(path).map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
        Self::with_tags(inner, eos)
    }

    /// The `tokenizer.json` of a model directory, ending sequences with the token the
    /// directory's own files name (see [`eos_of_dir`]).
    pub fn load_model_dir(dir: &Path) -> Result<(Self, usize)> {
        let path = dir.join("tokenizer.json");
        let inner =
            Tokenizer::from_file(&path).map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
        let eos = match eos_of_dir(dir)? {
            Eos::Token(token) => token,
            Eos::Id(id, file) => inner.id_to_token(id).with_context(|| {
                format!("{file} names eos token id {id}, which tokenizer.json does not have")
            })?,
        };
        Self::with_tags(inner, &eos)
    }

    fn with_tags(mut inner: Tokenizer, eos: &str) -> Result<(Self, usize)> {
        let added = inner.add_special_tokens(&TAGS.map(|t| AddedToken::from(t, true)));
        let pad = inner.token_to_id(PAD).map(|_| PAD).unwrap_or(eos);
        Ok((Self::wrap(inner, eos, pad)?, added))
    }

    /// A character-level tokenizer for the `tiny` preset: every character of `corpus`, plus the
    /// tags and `<pad>`, `<eos>`, `<unk>`.
    pub fn characters(corpus: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self> {
        let mut chars = BTreeSet::new();
        for text in corpus {
            let text = text.as_ref();
            let mut rest = text;
            // Tags are whole tokens: keep their characters out unless they occur elsewhere.
            while !rest.is_empty() {
                if let Some(tag) = TAGS.iter().find(|t| rest.starts_with(**t)) {
                    rest = &rest[tag.len()..];
                } else {
                    let c = rest.chars().next().expect("non-empty");
                    chars.insert(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        let specials: Vec<&str> = [PAD, EOS, UNK].into_iter().chain(TAGS).collect();
        let mut vocab = serde_json::Map::new();
        for (id, token) in specials
            .iter()
            .map(|s| s.to_string())
            .chain(chars.iter().map(|c| c.to_string()))
            .enumerate()
        {
            vocab.insert(token, serde_json::json!(id));
        }
        let added: Vec<_> = specials
            .iter()
            .enumerate()
            .map(|(id, content)| {
                serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                                   "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "FixedLength", "length": 1},
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
        });
        let inner: Tokenizer = json
            .to_string()
            .parse()
            .map_err(|e| anyhow!("building the character tokenizer: {e}"))?;
        Self::wrap(inner, EOS, PAD)
    }

    /// A byte-level BPE tokenizer learned from `corpus` (as the tokenizers of Qwen and Llama are
    /// made, digits split one per token), with `<pad>`, `<eos>` and the tags as special tokens:
    /// the `tiny-base` preset's. Any text encodes; the corpus's words become single tokens.
    pub fn byte_bpe(
        corpus: impl Iterator<Item = impl AsRef<str> + Send> + Send,
        vocab_size: usize,
    ) -> Result<Self> {
        use tokenizers::models::TrainerWrapper;
        use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::digits::Digits;
        use tokenizers::pre_tokenizers::sequence::Sequence;
        let specials: Vec<AddedToken> = [PAD, EOS]
            .into_iter()
            .chain(TAGS)
            .map(|t| AddedToken::from(t, true))
            .collect();
        let mut trainer = TrainerWrapper::BpeTrainer(
            BpeTrainerBuilder::new()
                .vocab_size(vocab_size)
                .min_frequency(2)
                .show_progress(false)
                .special_tokens(specials)
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                .build(),
        );
        let mut inner = Tokenizer::new(BPE::default());
        inner
            .with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])))
            .with_decoder(Some(ByteLevel::default()));
        inner
            .train(&mut trainer, corpus)
            .map_err(|e| anyhow!("training the BPE tokenizer: {e}"))?;
        Self::wrap(inner, EOS, PAD)
    }

    fn wrap(inner: Tokenizer, eos: &str, pad: &str) -> Result<Self> {
        let id = |token: &str| -> Result<i64> {
            inner
                .token_to_id(token)
                .map(i64::from)
                .with_context(|| format!("the tokenizer has no {token:?}"))
        };
        Ok(PrlTokenizer {
            tags: TagIds {
                open_parallel: id(TAGS[0])?,
                close_parallel: id(TAGS[1])?,
                open_path: id(TAGS[2])?,
                close_path: id(TAGS[3])?,
            },
            open_summary: id(TAGS[4])?,
            close_summary: id(TAGS[5])?,
            eos: id(eos)?,
            pad: id(pad)?,
            eos_token: eos.to_owned(),
            inner,
        })
    }

    /// The ids decoding needs.
    pub fn controls(&self) -> Result<crate::rollout::Controls> {
        Ok(crate::rollout::Controls {
            tags: self.tags,
            open_summary: self.open_summary,
            eos: self.eos,
            pad: self.pad,
            newline: self.encode("\n")?,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(encoding.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// Text with the tags kept (they are the format), other special tokens dropped. A byte-level
    /// vocabulary can sample a NUL byte, which PostgreSQL cannot store in text or jsonb: it
    /// becomes U+FFFD, so a recorded response never poisons ingest.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .filter(|&&i| i != self.eos && i != self.pad)
            .map(|&i| i as u32)
            .collect();
        let text = self
            .inner
            .decode(&ids, false)
            .map_err(|e| anyhow!("decoding: {e}"))?;
        Ok(if text.contains('\0') {
            text.replace('\0', "\u{FFFD}")
        } else {
            text
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, true)
            .map_err(|e| anyhow!("writing {}: {e}", path.display()))
    }
}

/// An end-of-sequence token as a model directory names it.
enum Eos {
    Token(String),
    /// An id, and the file that gave it.
    Id(u32, &'static str),
}

/// The end-of-sequence token of a model directory: prl's note in directories it wrote, else the
/// model's own `generation_config.json` (`eos_token_id`; the first of a list, as Qwen's chat models
/// give two), `tokenizer_config.json` (`eos_token`) or `config.json` (`eos_token_id`).
fn eos_of_dir(dir: &Path) -> Result<Eos> {
    let read = |name: &str| -> Result<Option<serde_json::Value>> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not JSON", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    let id = |value: &serde_json::Value| {
        let first = value
            .as_array()
            .and_then(|ids| ids.first())
            .unwrap_or(value);
        first.as_u64().and_then(|id| u32::try_from(id).ok())
    };
    if let Some(token) = read(crate::presets::PRL_META)?
        .as_ref()
        .and_then(|meta| meta["eos"].as_str())
    {
        return Ok(Eos::Token(token.to_owned()));
    }
    const GENERATION: &str = "generation_config.json";
    if let Some(found) = read(GENERATION)?.and_then(|c| id(&c["eos_token_id"])) {
        return Ok(Eos::Id(found, GENERATION));
    }
    if let Some(config) = read("tokenizer_config.json")? {
        let token = &config["eos_token"];
        // Older files write the token as an AddedToken object.
        if let Some(text) = token.as_str().or_else(|| token["content"].as_str()) {
            return Ok(Eos::Token(text.to_owned()));
        }
    }
    const CONFIG: &str = "config.json";
    if let Some(found) = read(CONFIG)?.and_then(|c| id(&c["eos_token_id"])) {
        return Ok(Eos::Id(found, CONFIG));
    }
    anyhow::bail!(
        "{} names no end-of-sequence token: give generation_config.json an eos_token_id or \
         tokenizer_config.json an eos_token",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_tokenizer_keeps_tags_whole_and_round_trips() {
        let text = "3+4=7.<Parallel><Path>a</Path><Path>b</Path></Parallel>\n<Summary>ok</Summary>\nFinal Answer: 7";
        let tok = PrlTokenizer::characters([text]).unwrap();
        let ids = tok.encode(text).unwrap();
        assert_eq!(
            ids.iter().filter(|&&i| i == tok.tags.open_parallel).count(),
            1
        );
        assert_eq!(ids.iter().filter(|&&i| i == tok.tags.open_path).count(), 2);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // A character the corpus never had is unknown, not dropped.
        assert_eq!(
            tok.encode("~").unwrap(),
            [tok.inner.token_to_id(UNK).unwrap() as i64]
        );
    }

    #[test]
    fn a_byte_bpe_tokenizer_learns_words_splits_digits_and_encodes_anything() {
        let corpus =
            ["Mia has 12 apples. Mia finds 30 more apples.\n12+30=42.\nFinal Answer: 42"; 50];
        let tok = PrlTokenizer::byte_bpe(corpus.iter(), 300).unwrap();
        let text = "Mia has 12 apples.<Parallel><Path>12</Path></Parallel>\n<Summary>ok</Summary>\nFinal Answer: 42";
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(ids.iter().filter(|&&i| i == tok.tags.open_path).count(), 1);
        // Digits are single tokens; a corpus word is one token; unseen text still round-trips.
        assert_eq!(tok.encode("12").unwrap().len(), 2);
        assert_eq!(tok.encode(" apples").unwrap().len(), 1);
        assert_eq!(
            tok.decode(&tok.encode("Zürich ~").unwrap()).unwrap(),
            "Zürich ~"
        );
        // A sampled NUL byte is not text PostgreSQL can store: it decodes as U+FFFD.
        assert_eq!(
            tok.decode(&tok.encode("7\u{0}8").unwrap()).unwrap(),
            "7\u{FFFD}8"
        );
    }
}
