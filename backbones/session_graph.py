"""SR-GNN's session graphs for a whole batch at once, as one edge list over all sessions' nodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ecbench.backbones.packing import PackedSessions, occurrences


@dataclass(frozen=True)
class SessionGraphs:
    """The item graphs of a batch of sessions (Wu et al., AAAI 2019, Section "Constructing
    Session Graphs"), built with sorting and scatter operations, no loop over sessions.

    Each session's nodes are its distinct items (ordered by item id, as SR-GNN's `np.unique`),
    with an edge u -> v wherever v follows u in the session; a transition seen twice is one
    edge, as in SR-GNN's released code. A_in[v, u] = 1 / in-degree(v) and A_out[u, v] =
    1 / out-degree(u) for each edge u -> v: the in- and out-adjacency, each row normalised.
    Nodes of all sessions are numbered together (session by session), so the graphs of a batch
    are one block-diagonal graph kept as an edge list.
    """

    num_sessions: int
    node_session: torch.Tensor  # [U] the session of each node
    node_item: torch.Tensor  # [U] its item id
    token_node: torch.Tensor  # [N] the node of each packed token
    edge_source: torch.Tensor  # [E] u of each distinct edge u -> v
    edge_target: torch.Tensor  # [E] v
    in_weight: torch.Tensor  # [E] A_in[v, u] = 1 / in-degree(v)
    out_weight: torch.Tensor  # [E] A_out[u, v] = 1 / out-degree(u)

    @classmethod
    def from_packed(cls, packed: PackedSessions, num_items: int) -> "SessionGraphs":
        keys = packed.session_of * num_items + packed.items
        node_keys, token_node = torch.unique(keys, sorted=True, return_inverse=True)
        num_nodes = node_keys.shape[0]  # not len(): a TorchScript trace keeps .shape dynamic
        follows = packed.session_of[1:] == packed.session_of[:-1]  # token i+1 follows token i
        pairs = torch.unique(token_node[:-1][follows] * num_nodes + token_node[1:][follows])
        # divisions and subtractions, not `%`: the ONNX exporter cannot take a symbolic modulus
        source = torch.div(pairs, num_nodes, rounding_mode="floor")
        target = pairs - source * num_nodes
        in_degree = occurrences(target, num_nodes)
        out_degree = occurrences(source, num_nodes)
        node_session = torch.div(node_keys, num_items, rounding_mode="floor")
        return cls(packed.batch, node_session, node_keys - node_session * num_items, token_node,
                   source, target, 1.0 / in_degree[target], 1.0 / out_degree[source])

    @classmethod
    def from_padded(cls, item_seq: torch.Tensor, packed: PackedSessions) -> "SessionGraphs":
        """The same graphs from the padded batch [B, L] by comparisons within each session, with
        no sort (`torch.unique`), for export to runtimes without one (ExecuTorch): nodes numbered
        in order of first occurrence rather than of item id, edges in order of first transition.
        Only a relabelling: SR-GNN's output depends on neither order."""
        batch, length = item_seq.shape
        real = item_seq > 0
        position = torch.arange(length, device=item_seq.device)
        earlier = position.unsqueeze(1) > position  # [L, L]: [i, j] = j before i
        same = (item_seq.unsqueeze(2) == item_seq.unsqueeze(1)) & real.unsqueeze(2)  # [B, L, L]
        first = real & ~(same & earlier).any(2)  # the first occurrence of its item
        flat_first = first.reshape(-1)
        node_at = torch.cumsum(flat_first.to(torch.int64), 0) - 1  # at each first occurrence
        start = torch.arange(batch, device=item_seq.device).unsqueeze(1) * length
        node_of = node_at[start + same.to(torch.int64).argmax(2)]  # [B, L] (argmax: first match)
        node_item = item_seq.reshape(-1)[flat_first]
        grid = torch.arange(batch * length, device=item_seq.device)
        node_session = torch.div(grid, length, rounding_mode="floor")[flat_first]
        num_nodes = node_item.shape[0]
        # transitions i -> i + 1 within a session; one seen before in the session is no new edge
        # (the next position by a gather over all L, not [:, 1:] slices of L - 1, whose strides
        # would pin the length in an export)
        following = (position + 1).clamp(max=length - 1)
        after = item_seq.index_select(1, following)
        step = (after > 0) & (position < length - 1)
        seen = (same & (after.unsqueeze(2) == after.unsqueeze(1)) & earlier
                & step.unsqueeze(1)).any(2)
        keep = (step & ~seen).reshape(-1)  # one-dimensional masks: ExecuTorch mishandles others
        source = node_of.reshape(-1)[keep]
        target = node_of.index_select(1, following).reshape(-1)[keep]
        in_degree = occurrences(target, num_nodes)
        out_degree = occurrences(source, num_nodes)
        return cls(batch, node_session, node_item, node_of.reshape(-1)[packed.flat_index],
                   source, target, 1.0 / in_degree[target], 1.0 / out_degree[source])

    @property
    def num_nodes(self) -> int:
        return self.node_item.shape[0]

    def aggregate_in(self, messages: torch.Tensor) -> torch.Tensor:
        """A_in @ messages for every node at once: [U, D] -> [U, D]."""
        weight = self.in_weight.to(messages.dtype).unsqueeze(1)
        weighted = messages.index_select(0, self.edge_source) * weight
        return messages.new_zeros(messages.shape).index_add(0, self.edge_target, weighted)

    def aggregate_out(self, messages: torch.Tensor) -> torch.Tensor:
        """A_out @ messages for every node at once: [U, D] -> [U, D]."""
        weight = self.out_weight.to(messages.dtype).unsqueeze(1)
        weighted = messages.index_select(0, self.edge_target) * weight
        return messages.new_zeros(messages.shape).index_add(0, self.edge_source, weighted)

    def dense(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-session matrices for inspection: (A_in, A_out) [B, n, n] with n the most nodes in
        a session, rows and columns in each session's node order, and the items [B, n] (0 pads)."""
        counts = torch.bincount(self.node_session, minlength=self.num_sessions)
        start = torch.cumsum(counts, 0) - counts
        local = torch.arange(self.num_nodes, device=counts.device) - start[self.node_session]
        n = int(counts.max()) if self.num_nodes else 0
        items = counts.new_zeros(self.num_sessions, n)
        items[self.node_session, local] = self.node_item
        session = self.node_session[self.edge_source]
        source, target = local[self.edge_source], local[self.edge_target]
        a_in = self.in_weight.new_zeros(self.num_sessions, n, n).index_put_((session, target, source),
                                                               self.in_weight)
        a_out = self.out_weight.new_zeros(self.num_sessions, n, n).index_put_((session, source, target),
                                                                self.out_weight)
        return a_in, a_out, items
