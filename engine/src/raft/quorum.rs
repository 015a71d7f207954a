//! Majority arithmetic over a set of voters: the committed index, the outcome of
//! an election and the newest heartbeat round a majority has answered.
//!
//! Pure functions over plain slices; learners never appear here.

use corekv_rpc::raft::Index;

/// The number of voters that make a majority of `voter_count`.
pub fn majority(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The largest value that a majority of voters has reached: sort descending and
/// take the majority-th one. Used for the commit index (values = match indexes) and
/// for read rounds (values = acknowledged heartbeat rounds). Returns 0 for no voters.
pub fn majority_value(values: &mut [Index]) -> Index {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[majority(values.len()) - 1]
}

/// How an election stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused: the election cannot be won.
    Lost,
    /// Neither yet.
    Pending,
}

/// Tallies `granted` and `rejected` votes among `voter_count` voters.
pub fn vote_result(voter_count: usize, granted: usize, rejected: usize) -> VoteResult {
    let need = majority(voter_count);
    if granted >= need {
        VoteResult::Won
    } else if rejected > voter_count - need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_value_is_the_median_of_the_top() {
        assert_eq!(majority_value(&mut []), 0);
        assert_eq!(majority_value(&mut [7]), 7);
        assert_eq!(majority_value(&mut [5, 1, 3]), 3);
        assert_eq!(majority_value(&mut [5, 5, 1, 1]), 1, "4 voters need 3");
        assert_eq!(majority_value(&mut [9, 8, 7, 2, 1]), 7);
    }

    #[test]
    fn votes_win_lose_or_wait() {
        assert_eq!(vote_result(3, 2, 0), VoteResult::Won);
        assert_eq!(vote_result(3, 1, 1), VoteResult::Pending);
        assert_eq!(vote_result(3, 1, 2), VoteResult::Lost);
        assert_eq!(vote_result(4, 2, 2), VoteResult::Lost, "2 of 4 is no majority");
        assert_eq!(vote_result(4, 2, 1), VoteResult::Pending);
        assert_eq!(vote_result(1, 1, 0), VoteResult::Won);
    }
}
