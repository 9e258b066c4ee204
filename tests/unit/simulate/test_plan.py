from __future__ import annotations

import itertools

import pytest

from meetinghooks.simulate.plan import BLOCK, Mix, plans


class TestPlans:
    def test_shares_are_exact_even_in_a_short_run(self) -> None:
        scripts = list(
            plans(Mix(ingest=0.5, ends=0.8, duplicates=0.25, out_of_order=0.5), meetings=10, seed=3)
        )
        assert [s.index for s in scripts] == list(range(10))
        platform = [s for s in scripts if s.via_ingest]
        assert len(platform) == 5
        assert sum(s.ends for s in scripts) == 8
        ended_platform = [s for s in platform if s.ends]
        assert sum(s.out_of_order for s in scripts) == round(len(ended_platform) * 0.5)
        ingest_events = len(platform) + len(ended_platform)
        assert sum(s.duplicate_start + s.duplicate_end for s in scripts) == round(
            ingest_events * 0.25
        )

    def test_only_ingest_events_are_repeated_or_reordered(self) -> None:
        for script in plans(
            Mix(ingest=0.3, ends=0.5, duplicates=1, out_of_order=1), meetings=40, seed=1
        ):
            if not script.via_ingest:
                assert not script.duplicate_start
                assert not script.duplicate_end
                assert not script.out_of_order
                assert script.length_seconds == 0
            else:
                assert script.length_seconds >= 1
            if not script.ends:
                assert not script.duplicate_end
                assert not script.out_of_order

    def test_a_seed_repeats_the_mix(self) -> None:
        assert list(plans(Mix(), meetings=30, seed=7)) == list(plans(Mix(), meetings=30, seed=7))
        assert list(plans(Mix(), meetings=30, seed=7)) != list(plans(Mix(), meetings=30, seed=8))

    def test_without_a_count_meetings_keep_coming(self) -> None:
        scripts = list(itertools.islice(plans(Mix(), meetings=None, seed=1), BLOCK * 2 + 5))
        assert [s.index for s in scripts] == list(range(BLOCK * 2 + 5))

    def test_requests_counts_every_request_of_a_script(self) -> None:
        (script,) = plans(Mix(ingest=1, ends=1, duplicates=1, out_of_order=0), meetings=1, seed=1)
        assert script.requests == 5  # create, start, end, and each of them again

    @pytest.mark.parametrize("share", [-0.1, 1.5])
    def test_a_share_outside_zero_to_one_is_refused(self, share: float) -> None:
        with pytest.raises(ValueError, match="--out-of-order must be between 0 and 1"):
            Mix(out_of_order=share)
