-- wrk script: DEPTH pipelined GET / requests per round trip (default 16).
--   DEPTH=16 wrk -t1 -c256 -d5s -s bench/pipeline.lua http://127.0.0.1:8080/
-- wrk counts every response, so Requests/sec is responses per second.
local depth = tonumber(os.getenv("DEPTH") or "16")

init = function(args)
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format(nil, "/")
  end
  batch = table.concat(requests)
end

request = function()
  return batch
end
