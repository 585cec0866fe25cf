%% Armstrong's ring, the Erlang side of `molt bench --only ring --erlang`:
%% N processes in a ring, a token passed Hops times around it, timed from
%% the first send to the last link's `done`. The same shape as molt's
%% ring (bench-guest's RingLink): each link is spawned with the previous
%% one as its next, the first learns the last, then the token goes.
%% Prints, per run: "ring N: T ns/hop F faults/hop".
-module(molt_ring).
-export([main/1]).

main(Args) ->
    [N, Hops, Runs] = [list_to_integer(A) || A <- Args],
    lists:foreach(fun(_) -> run(N, Hops) end, lists:seq(1, Runs)),
    halt(0).

run(N, Hops) ->
    First = spawn(fun first/0),
    {Last, Pids} = lists:foldl(
        fun(_, {Next, Acc}) ->
            P = spawn(fun() -> loop(Next) end),
            {P, [P | Acc]}
        end,
        {First, [First]},
        lists:seq(2, N)
    ),
    First ! {next, Last},
    Faults0 = minflt(),
    T0 = erlang:monotonic_time(nanosecond),
    First ! {token, Hops, self()},
    receive
        done -> ok
    end,
    T1 = erlang:monotonic_time(nanosecond),
    Faults1 = minflt(),
    io:format("ring ~b: ~.1f ns/hop ~.4f faults/hop~n",
              [N, (T1 - T0) / Hops, (Faults1 - Faults0) / Hops]),
    lists:foreach(fun(P) -> exit(P, kill) end, Pids),
    ok.

first() ->
    receive
        {next, Next} -> loop(Next)
    end.

loop(Next) ->
    receive
        {token, 0, Report} ->
            Report ! done,
            loop(Next);
        {token, Hops, Report} ->
            Next ! {token, Hops - 1, Report},
            loop(Next)
    end.

%% This VM's minor page faults so far (field 10 of /proc/self/stat).
minflt() ->
    {ok, Stat} = file:read_file("/proc/self/stat"),
    [_, After] = binary:split(Stat, <<") ">>),
    Fields = binary:split(After, <<" ">>, [global]),
    binary_to_integer(lists:nth(8, Fields)).
