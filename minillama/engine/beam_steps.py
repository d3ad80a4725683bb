"""The engine's half of beam search: a step's beams set apart from the rows the sampler draws
for, their searches' selection launched behind the forward pass, and once read, made real:
beams forked, pruned, continued and finished on the shared KV blocks.

beam_search.py holds the rules (Hugging Face's, step by step) and the selection's two stages;
this mixin of LLMEngine holds what the rules decide turned into sequences, blocks and outputs.
It reads the engine's state through `self` (the scheduler, the block manager, the sequences,
the searches running) and calls the engine's own helpers for what forks and outputs share with
ordinary requests (_fork_blocks, _copy_on_write, _notify_fork, _emit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from minillama.engine.beam_search import BeamGroup, Candidate, Hypothesis, SearchStep, Selection, launch_selection
from minillama.engine.outputs import PruneEvent, RequestOutput
from minillama.engine.sequence import Sequence
from minillama.transfer import to_device

if TYPE_CHECKING:
    from minillama.engine.llm_engine import LLMEngine


class BeamSearchSteps:
    """LLMEngine's beam-search steps (LLMEngine inherits them)."""

    def _set_beams_apart(self: LLMEngine, seqs: list[Sequence], logits: torch.Tensor
                         ) -> tuple[list[Sequence], torch.Tensor, tuple[list[int], list[int]] | None]:
        """The sequences the sampler draws for and their logits rows, and (the rows of those,
        the rows of beams) when some rows are beams' (they go to their searches instead)."""
        beam_rows = [row for row, seq in enumerate(seqs) if seq.beam_of is not None]
        if not beam_rows:
            return seqs, logits, None
        drawn_rows = [row for row, seq in enumerate(seqs) if seq.beam_of is None]
        if not drawn_rows:  # only beams: nothing to copy
            drawn_logits = logits[:0]
        else:  # the row index through pinned memory: a pageable one would wait for the forward pass
            drawn_logits = logits.index_select(0, to_device(torch.tensor(drawn_rows, dtype=torch.long), logits.device))
        return [seqs[row] for row in drawn_rows], drawn_logits, (drawn_rows, beam_rows)

    def _launch_searches(self: LLMEngine, logits: torch.Tensor, seqs: list[Sequence], beam_rows: list[int]) -> SearchStep:
        """Queue the selection of every search whose beams gave logits rows (`beam_rows` of the
        batch `seqs`) behind the forward pass (beam_search.launch_selection)."""
        row_of = {seqs[row].seq_id: row for row in beam_rows}
        groups = list({seqs[row].beam_of: self._searching[seqs[row].beam_of] for row in beam_rows}.values())
        # The scheduler keeps a search's beams in step: all of them sampled in this step.
        rows = [[row_of[beam.seq_id] for beam in group.beams] for group in groups]
        return SearchStep(groups, rows, launch_selection(groups, logits, rows))

    def _finish_searches(self: LLMEngine, searches: SearchStep, outputs: list[RequestOutput], rows: list[int] | None = None
                         ) -> None:
        """One step of the searches, once their selection is on the host: appends to the
        sampler's `outputs` each search's new and continued beams, and to `rows` (their logits
        rows, when the caller tracks them) each one's parent's row."""
        for group, parent_rows, selection in zip(searches.groups, searches.rows, searches.pending.finish()):
            for candidate, output in self._apply_selection(group, selection):
                outputs.append(output)
                if rows is not None:
                    rows.append(parent_rows[candidate.parent])
            if selection.done:
                del self._searching[group.request_id]
        self._copy_on_write()

    def _apply_selection(self: LLMEngine, group: BeamGroup, selection: Selection) -> list[tuple[Candidate, RequestOutput]]:
        """Make a selection real: prune the beams nothing continues, fork a beam continued by
        several candidates (the first continues in place), finish the hypotheses. Returns each
        new token's output with its candidate, best first."""
        parents, k = group.beams, group.width
        # Each parent's children, best first: (candidate, its hypothesis if it finished).
        children: dict[int, list[tuple[Candidate, Hypothesis | None]]] = {}
        for candidate in selection.keep:  # best first
            children.setdefault(candidate.parent, []).append((candidate, None))
        if selection.finished:
            for hypothesis in selection.finished:
                children.setdefault(hypothesis.candidate.parent, []).append((hypothesis.candidate, hypothesis))
            for siblings in children.values():
                siblings.sort(key=lambda child: child[0].rank)
        self.scheduler.release_seats(group.request_id)  # from now on its seats are its beams'
        why = "the search ended" if selection.done else f"fell out of the {k} best beams"
        donors: list[Sequence] = []  # pruned beams still holding their blocks, for the forks to take over
        for index, beam in enumerate(parents):
            if index not in children:
                self._prune(group, beam, why, donors)
        for hypothesis in selection.displaced:
            self._prune(group, self.sequences[hypothesis.seq_id], f"pushed out of the {k} best finished beams")
        # Beams whose children all finished end in place first: their blocks and seats go to forks.
        finishing, going_on = [], []
        if not selection.finished:  # most steps: every child goes on
            going_on = list(children)
        else:
            for index, siblings in children.items():
                (going_on if any(h is None for _, h in siblings) else finishing).append(index)
        made: list[tuple[Candidate, RequestOutput]] = []
        for index in finishing:
            self._branch(group, parents[index], children[index], True, donors, made)
        # Each running fork needs one fresh block (beam_search.py): only the first selection, or
        # a full cache, may lack them. Then the donors' blocks are freed first and counted.
        running_forks = len(selection.keep) - len(going_on)
        if self.block_manager.num_free_blocks < running_forks:
            self._free_donors(donors)
        shares = self.block_manager.num_free_blocks >= running_forks
        for index in going_on:
            self._branch(group, parents[index], children[index], shares, donors, made)
        self._free_donors(donors)  # the pruned beams no fork took over
        if not shares:  # the search waits whole, to be admitted again with blocks for all its beams
            self.scheduler.preempt_search([parents[index] for index in going_on])
            self.stats.preemptions += len(going_on)
        made.sort()  # by candidate, so by rank (unique): best first
        # The next beams, best first: the candidates that go on are selection.keep, in rank order.
        sequences = self.sequences
        group.beams = [] if selection.done else [
            sequences[output.request_id] for candidate, output in made if not candidate.ends
        ]
        return made

    def _branch(self: LLMEngine, group: BeamGroup, parent: Sequence, children: list[tuple[Candidate, Hypothesis | None]],
                shares: bool, donors: list[Sequence], made: list[tuple[Candidate, RequestOutput]]) -> None:
        """`parent`'s children, best first: its best running one (else its best finished one)
        continues it in place, each other one is a fork of it. Appends their outputs to `made`."""
        in_place = next((child for child in children if child[1] is None), children[0])
        for child in children:
            if child is not in_place:
                made.append(self._fork_beam(group, parent, *child, shares, donors))
        made.append(self._continue_beam(group, parent, *in_place))

    def _fork_beam(self: LLMEngine, group: BeamGroup, parent: Sequence, candidate: Candidate, hypothesis: Hypothesis | None,
                   shares: bool, donors: list[Sequence]) -> tuple[Candidate, RequestOutput]:
        """A new beam: `parent`'s tokens, then the candidate's. A running one shares the parent's
        blocks (full ones by reference, the partial one copied on write; a pruned beam's from
        `donors` handed over) when `shares`, and queues to recompute them otherwise; a finished
        hypothesis holds none."""
        position = parent.num_tokens
        seq = Sequence(next(self._request_ids), parent.token_ids, parent.params)  # a copy (one memcpy)
        seq.token_ids.append(candidate.token)
        seq.num_prompt_tokens = parent.num_prompt_tokens
        seq.beam_of, seq.parent_id, seq.fork_position = group.request_id, parent.seq_id, position
        self.sequences[seq.seq_id] = seq
        group.members.append(seq.seq_id)
        detokenizer = self._detokenizers.get(parent.seq_id)
        if detokenizer is not None:
            self._detokenizers[seq.seq_id] = detokenizer.fork()
        output = self._beam_output(group, seq, candidate.token, hypothesis)
        shared = False
        if hypothesis is not None:
            seq.finish(output.finish_reason)
            seq.beam_score, hypothesis.seq_id = hypothesis.score, seq.seq_id
        elif shares:  # _apply_selection counted a free block for each running fork
            self._fork_blocks(parent, seq, donors.pop() if donors else None)
            shared = True
            self.scheduler.add_beam(seq)
        else:
            self.scheduler.add(seq)  # no block for its copy: it waits with its search, to recompute
        self._notify_fork(parent, seq, "beam", shared)
        return candidate, output

    def _continue_beam(self: LLMEngine, group: BeamGroup, beam: Sequence, candidate: Candidate,
                       hypothesis: Hypothesis | None) -> tuple[Candidate, RequestOutput]:
        """`beam` goes on with the candidate's token in place; a finished hypothesis ends it."""
        beam.token_ids.append(candidate.token)
        output = self._beam_output(group, beam, candidate.token, hypothesis)
        if hypothesis is not None:
            self.scheduler.finish(beam, output.finish_reason)
            beam.beam_score, hypothesis.seq_id = hypothesis.score, beam.seq_id
        return candidate, output

    def _beam_output(self: LLMEngine, group: BeamGroup, beam: Sequence, token: int, hypothesis: Hypothesis | None
                     ) -> RequestOutput:
        """A beam's new token as an output. The search, not the usual rules, says whether it
        ends: a beam ends exactly when its candidate became a finished hypothesis."""
        return self._emit(beam, token, None if hypothesis is None else group.end_reason(token))

    def _prune(self: LLMEngine, group: BeamGroup, seq: Sequence, reason: str, donors: list[Sequence] | None = None) -> None:
        """Drop a beam (or a finished hypothesis pushed out of the best): its blocks go back,
        or, with `donors`, stay with it there for a fork of the same selection to take over."""
        if seq.is_finished:
            seq.finish_reason = "pruned"
        else:
            self.scheduler.finish(seq, "pruned", free_blocks=donors is None)
            if donors is not None:
                donors.append(seq)
        if self.observers:
            self._notify("on_prune", PruneEvent(seq.seq_id, group.request_id, reason))

    def _free_donors(self: LLMEngine, donors: list[Sequence]) -> None:
        """Give back the blocks of the pruned beams no fork took over."""
        for seq in donors:
            self.block_manager.free(seq)
        donors.clear()
