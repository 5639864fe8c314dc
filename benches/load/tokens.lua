-- wrk script for the load comparison: sends GET $LOAD_PATH with a bearer token chosen by
-- $LOAD_MODE and prints one machine-readable RESULT line at the end.
--   none    no Authorization header
--   one     the first token of $LOAD_TOKENS on every request
--   rotate  the first $LOAD_ROTATE tokens, in turn
--   fresh   every request a token not used before (threads take disjoint lines); a run
--           that runs out of tokens says so in the RESULT line (reused > 0)
--   twice   as fresh, but each token is sent twice in a row: the second verification
--           admits it to the cache, so the cache fills with every token seen

local mode = os.getenv("LOAD_MODE") or "none"
local file = os.getenv("LOAD_TOKENS")
local rotate = tonumber(os.getenv("LOAD_ROTATE") or "1000")
local nthreads = tonumber(os.getenv("LOAD_THREADS") or "1")
local path = os.getenv("LOAD_PATH") or "/api/items"

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local tokens = {}
local idx = 0
reused = 0

function init(args)
  if mode == "none" then
    return
  end
  local limit = math.huge
  if mode == "one" then
    limit = 1
  elseif mode == "rotate" then
    limit = rotate
  end
  local n = 0
  for line in io.lines(file) do
    n = n + 1
    -- fresh: this thread's share only (lines tid+1, tid+1+nthreads, ...)
    if (mode ~= "fresh" and mode ~= "twice") or (n - 1) % nthreads == tid then
      tokens[#tokens + 1] = line
    end
    if n >= limit then
      break
    end
  end
end

function request()
  if mode == "none" then
    return wrk.format("GET", path)
  end
  idx = idx + 1
  local limit = #tokens
  if mode == "twice" then
    limit = 2 * #tokens
  end
  if idx > limit then
    idx = 1
    if mode == "fresh" or mode == "twice" then
      reused = reused + 1
    end
  end
  local i = idx
  if mode == "twice" then
    i = math.floor((idx + 1) / 2)
  end
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tokens[i] })
end

function done(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do
    wraps = wraps + (t:get("reused") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d reused=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, wraps))
end
