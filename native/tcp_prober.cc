// TcpProber: TCP connect probes (health checks) run on a thread of their own. A probe's socket(), connect() and
// close() are ~30 us of kernel time on this kind of VM; with 51,200 dead backends (18,000 probes a second) they
// were most of the event loop's time, and its timers (the probes' timeouts) ran late. The thread connects, waits
// with epoll and a deadline heap, closes, and hands verdicts to the loop in batches (a uv_async). All policy
// (which probe, when, what a verdict means) stays in TypeScript (src/health/checks.ts).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>
#include <queue>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace peak {
namespace {

// A verdict's code: 0 connected, a positive errno (ECONNREFUSED, EMFILE, ...), or this: the timeout passed.
constexpr int32_t kTimedOut = -1;
// epoll data of the wake-up eventfd (probe ids are JavaScript safe integers, below 2^53).
constexpr uint64_t kWake = ~uint64_t(0);
// Verdicts handed to JavaScript per turn of the loop: a turn of ~1 ms, other I/O between turns.
constexpr size_t kDeliverMax = 256;

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

struct Request {
  uint64_t id;
  bool cancel;
  sockaddr_storage addr;
  socklen_t len;
  int64_t startNs;
  int64_t deadlineNs;
};

struct Verdict {
  double id;
  int32_t code;
  double ms;
};

struct Pending {
  int fd;
  int64_t startNs;
};

struct Deadline {
  int64_t at;
  uint64_t id;
  bool operator>(const Deadline& o) const { return at > o.at; }
};

class TcpProber : public Napi::ObjectWrap<TcpProber> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "TcpProber",
                       {InstanceMethod("start", &TcpProber::Start), InstanceMethod("cancel", &TcpProber::Cancel),
                        InstanceMethod("ref", &TcpProber::RefLoop), InstanceMethod("unref", &TcpProber::UnrefLoop),
                        InstanceMethod("close", &TcpProber::Close)});
  }

  // new TcpProber(onVerdicts(ids: Float64Array, codes: Int32Array, ms: Float64Array))
  explicit TcpProber(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TcpProber>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "onVerdicts: not a function");
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) ThrowErrno(env, "epoll_create1", errno);
    evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (evfd_ < 0) {
      int e = errno;
      close(epfd_);
      ThrowErrno(env, "eventfd", e);
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWake;
    uv_loop_t* loop = nullptr;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev) != 0 || napi_get_uv_event_loop(env, &loop) != napi_ok ||
        loop == nullptr) {
      close(evfd_);
      close(epfd_);
      throw Napi::Error::New(env, "TcpProber: epoll or the event loop is not available");
    }
    async_ = new uv_async_t;
    uv_async_init(loop, async_, OnAsync);
    async_->data = this;
    // The loop is kept alive only while probes are in flight (ref / unref from JavaScript).
    uv_unref((uv_handle_t*)async_);
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "TcpProber");
    env_ = env;
    napi_add_env_cleanup_hook(env, CleanupHook, this);
    thread_ = std::thread([this] { Run(); });
    // Alive until close(): the async handle and the thread point at this object.
    Ref();
  }

  ~TcpProber() override { Shutdown(); }

 private:
  static void CleanupHook(void* arg) { static_cast<TcpProber*>(arg)->Shutdown(); }

  // start(id, address, v6, port, timeoutMs): queues a probe; its verdict comes through onVerdicts.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (stopped_) throw Napi::Error::New(env, "TcpProber: closed");
    double id = info[0].As<Napi::Number>().DoubleValue();
    std::string address = ArgString(info, 1, "address");
    bool v6 = info[2].ToBoolean();
    uint32_t port = ArgU32(info, 3, "port");
    double timeoutMs = info[4].As<Napi::Number>().DoubleValue();
    if (!(id >= 0 && id < 9007199254740992.0)) throw Napi::TypeError::New(env, "id: not a safe integer");
    if (port < 1 || port > 65535) throw Napi::TypeError::New(env, "port: " + std::to_string(port) + " is not 1-65535");
    if (!(timeoutMs > 0)) throw Napi::TypeError::New(env, "timeoutMs: not positive");
    Request r{};
    r.id = uint64_t(id);
    r.cancel = false;
    if (v6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&r.addr);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(uint16_t(port));
      if (inet_pton(AF_INET6, address.c_str(), &a->sin6_addr) != 1)
        throw Napi::TypeError::New(env, "address \"" + address + "\" is not an IPv6 address");
      r.len = sizeof(sockaddr_in6);
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&r.addr);
      a->sin_family = AF_INET;
      a->sin_port = htons(uint16_t(port));
      if (inet_pton(AF_INET, address.c_str(), &a->sin_addr) != 1)
        throw Napi::TypeError::New(env, "address \"" + address + "\" is not an IPv4 address");
      r.len = sizeof(sockaddr_in);
    }
    r.startNs = NowNs();
    r.deadlineNs = r.startNs + int64_t(timeoutMs * 1e6);
    Queue(r);
    return env.Undefined();
  }

  // cancel(id): the probe's socket is closed if it is still open; no verdict of it is delivered after this
  // call's turn (one already queued for the loop may still come: JavaScript drops ids it no longer waits for).
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    if (stopped_) return info.Env().Undefined();
    Request r{};
    r.id = uint64_t(info[0].As<Napi::Number>().DoubleValue());
    r.cancel = true;
    Queue(r);
    return info.Env().Undefined();
  }

  Napi::Value RefLoop(const Napi::CallbackInfo& info) {
    if (async_ != nullptr) uv_ref((uv_handle_t*)async_);
    return info.Env().Undefined();
  }

  Napi::Value UnrefLoop(const Napi::CallbackInfo& info) {
    if (async_ != nullptr) uv_unref((uv_handle_t*)async_);
    return info.Env().Undefined();
  }

  // close(): stops the thread and closes every probe's socket; no verdict comes after it.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    bool wasOpen = !stopped_;
    Shutdown();
    if (wasOpen) Unref();
    return info.Env().Undefined();
  }

  void Queue(const Request& r) {
    bool wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(r);
      wake = !woken_;
      woken_ = true;
    }
    // one write per wake-up of the thread, however many requests it then finds
    if (wake) {
      uint64_t one = 1;
      ssize_t w = write(evfd_, &one, sizeof(one));
      (void)w;
    }
  }

  // The thread: connects, waits, closes.
  void Run() {
    std::vector<epoll_event> events(256);
    std::vector<Request> requests;
    std::vector<Verdict> verdicts;
    for (;;) {
      int timeout = -1;
      while (!heap_.empty() && pending_.find(heap_.top().id) == pending_.end()) heap_.pop();
      if (!heap_.empty()) {
        int64_t d = heap_.top().at - NowNs();
        timeout = d <= 0 ? 0 : int((d + 999999) / 1000000);
      }
      int n = epoll_wait(epfd_, events.data(), int(events.size()), timeout);
      int64_t now = NowNs();
      for (int i = 0; i < n; i++) {
        uint64_t id = events[i].data.u64;
        if (id == kWake) {
          uint64_t x;
          ssize_t r = read(evfd_, &x, sizeof(x));
          (void)r;
          continue;
        }
        auto it = pending_.find(id);
        if (it == pending_.end()) continue;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(it->second.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        else if (err == 0 && !(events[i].events & EPOLLOUT)) err = ECONNRESET;
        close(it->second.fd);
        verdicts.push_back({double(id), err, double(now - it->second.startNs) / 1e6});
        pending_.erase(it);
      }
      bool stop;
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests.swap(requests_);
        woken_ = false;
        stop = stop_;
      }
      for (const Request& r : requests) {
        if (r.cancel) {
          auto it = pending_.find(r.id);
          if (it != pending_.end()) {
            close(it->second.fd);  // also leaves the epoll set
            pending_.erase(it);
          }
        } else {
          StartOne(r, verdicts);
        }
      }
      requests.clear();
      now = NowNs();
      while (!heap_.empty() && heap_.top().at <= now) {
        uint64_t id = heap_.top().id;
        heap_.pop();
        auto it = pending_.find(id);
        if (it == pending_.end()) continue;
        close(it->second.fd);
        verdicts.push_back({double(id), kTimedOut, double(now - it->second.startNs) / 1e6});
        pending_.erase(it);
      }
      if (!verdicts.empty()) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          out_.insert(out_.end(), verdicts.begin(), verdicts.end());
        }
        verdicts.clear();
        uv_async_send(async_);
      }
      if (stop) break;
    }
    for (auto& p : pending_) close(p.second.fd);
    pending_.clear();
  }

  void StartOne(const Request& r, std::vector<Verdict>& verdicts) {
    auto ms = [&r] { return double(NowNs() - r.startNs) / 1e6; };
    int fd = socket(r.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      verdicts.push_back({double(r.id), errno, ms()});
      return;
    }
    if (connect(fd, reinterpret_cast<const sockaddr*>(&r.addr), r.len) == 0) {
      close(fd);
      verdicts.push_back({double(r.id), 0, ms()});
      return;
    }
    if (errno != EINPROGRESS) {
      int e = errno;
      close(fd);
      verdicts.push_back({double(r.id), e, ms()});
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = r.id;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      int e = errno;
      close(fd);
      verdicts.push_back({double(r.id), e, ms()});
      return;
    }
    pending_[r.id] = Pending{fd, r.startNs};
    heap_.push(Deadline{r.deadlineNs, r.id});
  }

  static void OnAsync(uv_async_t* h) {
    auto* self = static_cast<TcpProber*>(h->data);
    if (self != nullptr) self->Deliver();
  }

  // On the loop: at most kDeliverMax verdicts to JavaScript, the rest on the next turn.
  void Deliver() {
    std::vector<Verdict> batch;
    bool more;
    {
      std::lock_guard<std::mutex> lock(mu_);
      size_t k = std::min(out_.size(), kDeliverMax);
      batch.assign(out_.begin(), out_.begin() + k);
      out_.erase(out_.begin(), out_.begin() + k);
      more = !out_.empty();
    }
    if (more) uv_async_send(async_);
    if (batch.empty() || stopped_) return;
    Napi::Env env = env_;
    Napi::HandleScope scope(env);
    auto ids = Napi::Float64Array::New(env, batch.size());
    auto codes = Napi::Int32Array::New(env, batch.size());
    auto ms = Napi::Float64Array::New(env, batch.size());
    for (size_t i = 0; i < batch.size(); i++) {
      ids[i] = batch[i].id;
      codes[i] = batch[i].code;
      ms[i] = batch[i].ms;
    }
    // A callback that throws must not unwind into libuv (std::terminate): the error goes to 'uncaughtException'
    // as any callback's would.
    try {
      callback_.MakeCallback(Value(), {ids, codes, ms}, *context_);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  void Shutdown() {
    if (stopped_) return;
    stopped_ = true;
    napi_remove_env_cleanup_hook(env_, CleanupHook, this);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    uint64_t one = 1;
    ssize_t w = write(evfd_, &one, sizeof(one));
    (void)w;
    if (thread_.joinable()) thread_.join();
    close(evfd_);
    close(epfd_);
    if (async_ != nullptr) {
      async_->data = nullptr;
      uv_close((uv_handle_t*)async_, [](uv_handle_t* h) { delete (uv_async_t*)h; });
      async_ = nullptr;
    }
  }

  napi_env env_ = nullptr;
  int epfd_ = -1;
  int evfd_ = -1;
  bool stopped_ = false;
  uv_async_t* async_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
  std::thread thread_;
  // shared with the thread
  std::mutex mu_;
  std::vector<Request> requests_;
  bool woken_ = false;
  bool stop_ = false;
  std::deque<Verdict> out_;
  // the thread's own
  std::unordered_map<uint64_t, Pending> pending_;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<Deadline>> heap_;
};

}  // namespace

void InitTcpProber(Napi::Env env, Napi::Object exports) { exports.Set("TcpProber", TcpProber::Define(env)); }

}  // namespace peak
