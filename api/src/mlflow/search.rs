//! MLflow's search grammar (`filter` and `order_by` of `runs/search` and `experiments/search`):
//! clauses joined by AND, each `entity.key operator value`, keys bare, `backquoted` or
//! "quoted". Parsed into clauses that the searches turn into SQL with bound values.

use super::MlflowError;
use super::protocol::Page;
use sqlx::{Postgres, QueryBuilder};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    List(Vec<String>),
    Null,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    pub entity: Entity,
    pub key: String,
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`, `LIKE`, `ILIKE`, `IN`, `NOT IN`, `IS`, `IS NOT`.
    pub op: &'static str,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub entity: Entity,
    pub key: String,
    pub descending: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Number(f64),
    Op(&'static str),
    Open,
    Close,
    Comma,
}

fn tokens(text: &str) -> Result<Vec<Token>, MlflowError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '\'' | '"' | '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| invalid(text, &format!("an unclosed {c}")))?;
                let inner: String = chars[i + 1..i + 1 + end].iter().collect();
                out.push(if c == '`' {
                    Token::Word(inner)
                } else {
                    Token::Quoted(inner)
                });
                i += end + 2;
            }
            '=' | '!' | '<' | '>' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = match two.as_str() {
                    "!=" => "!=",
                    "<=" => "<=",
                    ">=" => ">=",
                    "==" => "=",
                    _ => match c {
                        '=' => "=",
                        '<' => "<",
                        '>' => ">",
                        _ => return Err(invalid(text, "a lone `!`")),
                    },
                };
                i += if op.len() == 2 || two == "==" { 2 } else { 1 };
                out.push(Token::Op(op));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(
                        chars[i],
                        '(' | ')' | ',' | '=' | '!' | '<' | '>' | '\'' | '"'
                    )
                {
                    // A backquote inside a word starts a quoted key: `metrics.`a b``.
                    if chars[i] == '`' {
                        break;
                    }
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if i < chars.len() && matches!(chars[i], '`' | '"') && word.ends_with('.') {
                    let quote = chars[i];
                    let end = chars[i + 1..]
                        .iter()
                        .position(|&d| d == quote)
                        .ok_or_else(|| invalid(text, &format!("an unclosed {quote}")))?;
                    let key: String = chars[i + 1..i + 1 + end].iter().collect();
                    out.push(Token::Word(format!("{word}{key}")));
                    i += end + 2;
                    continue;
                }
                match word.parse::<f64>() {
                    Ok(n)
                        if word
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.') =>
                    {
                        out.push(Token::Number(n))
                    }
                    _ => out.push(Token::Word(word)),
                }
            }
        }
    }
    Ok(out)
}

fn invalid(filter: &str, what: &str) -> MlflowError {
    MlflowError::invalid(format!("Invalid filter '{filter}': {what}"))
}

/// `entity.key` (or a bare attribute name) as an entity and a key.
fn identifier(word: &str) -> Result<(Entity, String), MlflowError> {
    let Some((prefix, key)) = word.split_once('.') else {
        return Ok((Entity::Attribute, word.to_owned()));
    };
    let entity = match prefix.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Entity::Metric,
        "param" | "params" | "parameter" | "parameters" => Entity::Param,
        "tag" | "tags" => Entity::Tag,
        "attribute" | "attributes" | "attr" | "run" => Entity::Attribute,
        other => {
            return Err(MlflowError::invalid(format!(
                "Invalid entity type '{other}' in '{word}': expected metrics, params, tags or attributes"
            )));
        }
    };
    let key = key.trim_matches(|c| c == '"' || c == '`');
    if key.is_empty() {
        return Err(MlflowError::invalid(format!("'{word}' names no key")));
    }
    Ok((entity, key.to_owned()))
}

pub fn parse_filter(filter: &str) -> Result<Vec<Clause>, MlflowError> {
    let tokens = tokens(filter)?;
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !clauses.is_empty() {
            match &tokens[i] {
                Token::Word(w) if w.eq_ignore_ascii_case("and") => i += 1,
                _ => {
                    return Err(invalid(
                        filter,
                        "clauses are joined by AND (OR is not supported)",
                    ));
                }
            }
        }
        let (entity, key) = match tokens.get(i) {
            Some(Token::Word(w)) => identifier(w)?,
            _ => {
                return Err(invalid(
                    filter,
                    "expected an identifier such as metrics.loss",
                ));
            }
        };
        i += 1;
        let word = |t: Option<&Token>, w: &str| matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
        let op: &'static str = match tokens.get(i) {
            Some(Token::Op(op)) => op,
            _ if word(tokens.get(i), "like") => "LIKE",
            _ if word(tokens.get(i), "ilike") => "ILIKE",
            _ if word(tokens.get(i), "in") => "IN",
            _ if word(tokens.get(i), "not") && word(tokens.get(i + 1), "in") => {
                i += 1;
                "NOT IN"
            }
            _ if word(tokens.get(i), "is") && word(tokens.get(i + 1), "not") => {
                i += 1;
                "IS NOT"
            }
            _ if word(tokens.get(i), "is") => "IS",
            _ => {
                return Err(invalid(
                    filter,
                    &format!("expected a comparison after '{key}'"),
                ));
            }
        };
        i += 1;
        let value = match (op, tokens.get(i)) {
            ("IS" | "IS NOT", Some(Token::Word(w))) if w.eq_ignore_ascii_case("null") => {
                Value::Null
            }
            ("IN" | "NOT IN", Some(Token::Open)) => {
                let mut items = Vec::new();
                loop {
                    i += 1;
                    match tokens.get(i) {
                        Some(Token::Quoted(s)) => items.push(s.clone()),
                        _ => return Err(invalid(filter, "IN takes a list of quoted strings")),
                    }
                    i += 1;
                    match tokens.get(i) {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => break,
                        _ => return Err(invalid(filter, "an IN list ends with )")),
                    }
                }
                Value::List(items)
            }
            (_, Some(Token::Quoted(s))) if !matches!(op, "IN" | "NOT IN" | "IS" | "IS NOT") => {
                Value::Text(s.clone())
            }
            (_, Some(Token::Number(n))) if !matches!(op, "IN" | "NOT IN" | "IS" | "IS NOT") => {
                Value::Number(*n)
            }
            _ => return Err(invalid(filter, &format!("'{key} {op}' needs a value"))),
        };
        i += 1;
        check_clause(filter, entity, &key, op, &value)?;
        clauses.push(Clause {
            entity,
            key,
            op,
            value,
        });
    }
    Ok(clauses)
}

/// Metrics compare as numbers; params and tags as strings; the operator must suit the value.
fn check_clause(
    filter: &str,
    entity: Entity,
    key: &str,
    op: &str,
    value: &Value,
) -> Result<(), MlflowError> {
    let ok = match (entity, value) {
        (Entity::Metric, Value::Number(_)) => matches!(op, "=" | "!=" | "<" | "<=" | ">" | ">="),
        (Entity::Metric, _) => false,
        (Entity::Param | Entity::Tag, Value::Text(_)) => {
            matches!(op, "=" | "!=" | "LIKE" | "ILIKE")
        }
        (Entity::Param | Entity::Tag, Value::List(_) | Value::Null) => true,
        (Entity::Param | Entity::Tag, Value::Number(_)) => false,
        (Entity::Attribute, _) => true,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            filter,
            &format!(
                "'{key} {op}' does not take that value (metrics compare with numbers; params and tags with quoted strings)"
            ),
        ))
    }
}

/// `order_by` items: `entity.key [ASC|DESC]`.
pub fn parse_order(items: &[String]) -> Result<Vec<Order>, MlflowError> {
    items
        .iter()
        .map(|item| {
            let tokens = tokens(item)?;
            let (word, direction) = match tokens.as_slice() {
                [Token::Word(w)] => (w, None),
                [Token::Word(w), Token::Word(d)] => (w, Some(d.to_ascii_uppercase())),
                _ => {
                    return Err(MlflowError::invalid(format!(
                        "Invalid order_by clause '{item}': expected `entity.key [ASC|DESC]`"
                    )));
                }
            };
            let descending = match direction.as_deref() {
                None | Some("ASC") => false,
                Some("DESC") => true,
                Some(other) => {
                    return Err(MlflowError::invalid(format!(
                        "Invalid order_by clause '{item}': `{other}` is neither ASC nor DESC"
                    )));
                }
            };
            let (entity, key) = identifier(word)?;
            Ok(Order {
                entity,
                key,
                descending,
            })
        })
        .collect()
}

/// How a search writes a field (an entity's key) as SQL; true when it is a number.
pub type Field = fn(&mut QueryBuilder<Postgres>, Entity, &str) -> Result<bool, MlflowError>;

/// A search's filter (` AND `-joined after what `q` holds), its order (then `tiebreak`) and
/// its page, in SQL with bound values.
pub fn push_search(
    q: &mut QueryBuilder<Postgres>,
    filter: Option<&str>,
    order_by: &[String],
    field: Field,
    tiebreak: &str,
    page: &Page,
) -> Result<(), MlflowError> {
    for clause in &parse_filter(filter.unwrap_or(""))? {
        q.push(" AND ");
        push_condition(q, clause, field)?;
    }
    q.push(" ORDER BY ");
    for o in &parse_order(order_by)? {
        field(q, o.entity, &o.key)?;
        q.push(if o.descending {
            " DESC NULLS LAST, "
        } else {
            " ASC NULLS LAST, "
        });
    }
    q.push(tiebreak)
        .push(" LIMIT ")
        .push_bind(page.fetch())
        .push(" OFFSET ")
        .push_bind(page.offset);
    Ok(())
}

/// `field op value` in SQL, the field written by `field`.
fn push_condition(
    q: &mut QueryBuilder<Postgres>,
    clause: &Clause,
    field: Field,
) -> Result<(), MlflowError> {
    q.push("(");
    let numeric = field(q, clause.entity, &clause.key)?;
    match (&clause.value, clause.op) {
        (Value::Null, "IS") => {
            q.push(" IS NULL");
        }
        (Value::Null, _) => {
            q.push(" IS NOT NULL");
        }
        (Value::List(items), "IN") if !numeric => {
            q.push(" = ANY(").push_bind(items.clone()).push(")");
        }
        (Value::List(items), _) if !numeric => {
            q.push(" <> ALL(").push_bind(items.clone()).push(")");
        }
        (Value::Number(n), op) if numeric && !matches!(op, "LIKE" | "ILIKE") => {
            q.push(format!(" {op} ")).push_bind(*n);
        }
        (Value::Text(t), op) if !numeric => {
            q.push(format!(" {op} ")).push_bind(t.clone());
        }
        _ => {
            return Err(MlflowError::invalid(format!(
                "'{}' {} needs a {}",
                clause.key,
                clause.op,
                if numeric { "number" } else { "quoted string" }
            )));
        }
    }
    q.push(")");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_as_mlflow_writes_them() {
        let clauses = parse_filter(
            "metrics.loss < 0.5 and params.lr = '0.01' AND tags.`mlflow.runName` LIKE 'r%' \
             and attributes.status IN ('FINISHED', 'RUNNING') and metrics.\"a b\" >= -1e-3 \
             and tags.x IS NOT NULL and name != 'y'",
        )
        .unwrap();
        let summary: Vec<(Entity, &str, &str)> = clauses
            .iter()
            .map(|c| (c.entity, c.key.as_str(), c.op))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Entity::Metric, "loss", "<"),
                (Entity::Param, "lr", "="),
                (Entity::Tag, "mlflow.runName", "LIKE"),
                (Entity::Attribute, "status", "IN"),
                (Entity::Metric, "a b", ">="),
                (Entity::Tag, "x", "IS NOT"),
                (Entity::Attribute, "name", "!="),
            ]
        );
        assert_eq!(clauses[0].value, Value::Number(0.5));
        assert_eq!(
            clauses[3].value,
            Value::List(vec!["FINISHED".into(), "RUNNING".into()])
        );
        assert_eq!(clauses[4].value, Value::Number(-1e-3));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        for (filter, words) in [
            ("metrics.loss < 'a'", "does not take that value"),
            ("metrics.loss < 1 or params.x = 'y'", "OR is not supported"),
            ("params.lr = '0.1", "unclosed"),
            ("foo.bar = 'x'", "Invalid entity type 'foo'"),
            ("metrics.loss", "expected a comparison"),
        ] {
            let message = parse_filter(filter).unwrap_err().message;
            assert!(message.contains(words), "{filter}: {message}");
        }
        assert!(parse_filter("").unwrap().is_empty());
    }

    #[test]
    fn order_by_reads_direction() {
        let order =
            parse_order(&["metrics.loss DESC".into(), "attributes.start_time".into()]).unwrap();
        assert_eq!(order[0].entity, Entity::Metric);
        assert!(order[0].descending);
        assert!(!order[1].descending);
        assert!(parse_order(&["metrics.loss SIDEWAYS".into()]).is_err());
    }
}
