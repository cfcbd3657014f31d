//! Grouping instructions into stages: the [`Dockerfile`] value.

use crate::ast::{Ast, Warning};
use crate::convert::convert;
use crate::directives::Directives;
use crate::error::ParseError;
use crate::instructions::{ArgDef, FromCommand, Instruction, InstructionKind};
use crate::span::Span;
use crate::suggest::suggest;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The parser directives.
    pub directives: Directives,
    /// The `ARG` instructions before the first `FROM` (visible only to FROM lines).
    pub meta_args: Vec<Instruction>,
    /// The stages in file order.
    pub stages: Vec<Stage>,
    /// Parse warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
}

/// One build stage: a FROM line and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position among the stages (0-based), usable as `COPY --from=<index>`.
    pub index: usize,
    /// The `AS` name, lower-cased.
    pub name: Option<String>,
    /// The FROM line's fields (base image text unexpanded, platform).
    pub from: FromCommand,
    /// The FROM line's keyword as written.
    pub keyword: String,
    /// The FROM line's span.
    pub span: Span,
    /// The FROM line's text.
    pub original: String,
    /// Comment lines directly above the FROM line.
    pub comments: Vec<String>,
    /// The stage's instructions after FROM.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// How many instructions of this stage create a filesystem layer (RUN, COPY, ADD).
    pub fn layer_count(&self) -> usize {
        self.instructions
            .iter()
            .filter(|i| i.kind.creates_layer())
            .count()
    }

    /// The stage's name, or its index as text when it has none (how `--from` refers to it).
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

impl Dockerfile {
    /// The escape character in effect.
    pub fn escape(&self) -> char {
        self.directives.escape
    }

    /// The stage named `name` (case-insensitive), if any.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
    }

    /// The stage to build for `--target`: the named one, or the last stage when `None`.
    pub fn target(&self, target: Option<&str>) -> Result<&Stage, ParseError> {
        match target {
            None => self.stages.last().ok_or(ParseError::NoStages),
            Some(t) => self.stage(t).ok_or_else(|| {
                let names: Vec<&str> = self
                    .stages
                    .iter()
                    .filter_map(|s| s.name.as_deref())
                    .collect();
                ParseError::UnknownTarget {
                    target: t.to_string(),
                    suggestion: suggest(t, &names),
                }
            }),
        }
    }

    /// The index of the stage that `base` (an expanded FROM base or `--from` value)
    /// names among the stages before `before`: a stage name, case-insensitively.
    pub fn stage_before(&self, base: &str, before: usize) -> Option<usize> {
        let lower = base.to_lowercase();
        self.stages[..before.min(self.stages.len())]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
    }

    /// The global ARG declarations in order.
    pub fn meta_arg_defs(&self) -> impl Iterator<Item = &ArgDef> {
        self.meta_args.iter().flat_map(|i| match &i.kind {
            InstructionKind::Arg(a) => a.args.as_slice(),
            _ => &[],
        })
    }
}

/// Build the typed view. With `allow_duplicate_names` a repeated stage name is kept
/// (the linter reports it) instead of failing.
pub(crate) fn build_with(
    src: &str,
    ast: Ast,
    allow_duplicate_names: bool,
) -> Result<Dockerfile, ParseError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let Ast {
        nodes,
        directives,
        warnings,
    } = ast;
    for node in nodes {
        let (range, span) = (node.source_range.clone(), node.span);
        let instr = convert(node, src)?;
        match instr.kind {
            InstructionKind::From(from) => {
                if let Some(name) = &from.alias {
                    if let Some(prev) = stages.iter().find(|s| s.name.as_ref() == Some(name)) {
                        if !allow_duplicate_names {
                            let written = from
                                .alias_as_written
                                .clone()
                                .unwrap_or_else(|| name.clone());
                            let (line, column) =
                                crate::ast::locate(src, range.start, range.end, &written)
                                    .unwrap_or((span.start_line, span.start_col));
                            return Err(ParseError::Invalid {
                                line,
                                column,
                                instruction: "FROM".into(),
                                problem: "duplicate stage name".into(),
                                found: written,
                                expected: format!(
                                    "a name not already used by the stage on line {}",
                                    prev.span.start_line
                                ),
                            });
                        }
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    name: from.alias.clone(),
                    from,
                    keyword: instr.keyword,
                    span: instr.span,
                    original: instr.original,
                    comments: instr.comments,
                    instructions: Vec::new(),
                });
            }
            InstructionKind::Arg(_) if stages.is_empty() => meta_args.push(instr),
            _ => match stages.last_mut() {
                Some(stage) => stage.instructions.push(instr),
                None => {
                    return Err(ParseError::Invalid {
                        line: instr.span.start_line,
                        column: instr.span.start_col,
                        instruction: instr.kind.name().into(),
                        problem: "no build stage in current context".into(),
                        found: instr.keyword.clone(),
                        expected: "only ARG instructions before the first FROM".into(),
                    })
                }
            },
        }
    }
    if stages.is_empty() {
        return Err(ParseError::NoStages);
    }
    Ok(Dockerfile {
        directives,
        meta_args,
        stages,
        warnings,
    })
}

pub(crate) fn build(src: &str, ast: Ast) -> Result<Dockerfile, ParseError> {
    build_with(src, ast, false)
}
