// BFD receive socket: a UDP socket that reports each datagram with its TTL / hop limit (GTSM, RFC 5881 §5),
// destination address and arrival interface, which Node's dgram cannot. Driven by a uv_poll on the loop.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "common.h"

namespace peak {

namespace {

// new BfdSocket({family: 4|6, port, address?, ifname?}, onDatagram(data, src, srcPort, dst, ifindex, ttl))
class BfdSocket : public Napi::ObjectWrap<BfdSocket> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BfdSocket",
                       {InstanceMethod("close", &BfdSocket::Close), InstanceAccessor("fd", &BfdSocket::Fd, nullptr),
                        InstanceAccessor("dropsNoBuffer", &BfdSocket::Truncated, nullptr)});
  }

  explicit BfdSocket(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BfdSocket>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
      throw Napi::TypeError::New(env, "BfdSocket(options, onDatagram) needs an options object and a function");
    Napi::Object o = info[0].As<Napi::Object>();
    Napi::Value famV = o.Get("family"), portV = o.Get("port"), addrV = o.Get("address"), ifV = o.Get("ifname");
    if (!famV.IsNumber() || (famV.As<Napi::Number>().Int32Value() != 4 && famV.As<Napi::Number>().Int32Value() != 6))
      throw Napi::TypeError::New(env, "family must be 4 or 6");
    if (!portV.IsNumber()) throw Napi::TypeError::New(env, "port must be a number");
    family_ = famV.As<Napi::Number>().Int32Value();
    int port = portV.As<Napi::Number>().Int32Value();
    if (port <= 0 || port > 65535) throw Napi::TypeError::New(env, "port must be 1..65535");
    std::string addr = addrV.IsString() ? addrV.As<Napi::String>().Utf8Value() : "";
    std::string ifname = ifV.IsString() ? ifV.As<Napi::String>().Utf8Value() : "";

    int fd = socket(family_ == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) ThrowErrno(env, "create udp socket", errno);
    auto fail = [&](const std::string& what) {
      int e = errno;
      close(fd);
      ThrowErrno(env, what, e);
    };
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) fail("set SO_REUSEADDR");
    // A burst (a flood of junk, or many sessions at once) must not push out real control packets: a large
    // receive buffer, forced past rmem_max where we may (CAP_NET_ADMIN), else as large as allowed.
    int rcvbuf = 1 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (!ifname.empty() && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname.c_str(), ifname.size()) != 0)
      fail("bind to device " + ifname);
    sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    if (family_ == 4) {
      if (setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &one, sizeof(one)) != 0) fail("set IP_RECVTTL");
      if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) != 0) fail("set IP_PKTINFO");
      auto* a = (sockaddr_in*)&ss;
      a->sin_family = AF_INET;
      a->sin_port = htons(port);
      if (!addr.empty() && inet_pton(AF_INET, addr.c_str(), &a->sin_addr) != 1) {
        close(fd);
        throw Napi::TypeError::New(env, "address \"" + addr + "\" is not an IPv4 address");
      }
      len = sizeof(sockaddr_in);
    } else {
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) fail("set IPV6_V6ONLY");
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof(one)) != 0) fail("set IPV6_RECVHOPLIMIT");
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) != 0) fail("set IPV6_RECVPKTINFO");
      auto* a = (sockaddr_in6*)&ss;
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(port);
      if (!addr.empty() && inet_pton(AF_INET6, addr.c_str(), &a->sin6_addr) != 1) {
        close(fd);
        throw Napi::TypeError::New(env, "address \"" + addr + "\" is not an IPv6 address");
      }
      len = sizeof(sockaddr_in6);
    }
    if (bind(fd, (sockaddr*)&ss, len) != 0)
      fail("bind udp " + (addr.empty() ? std::string(family_ == 4 ? "0.0.0.0" : "::") : addr) + " port " +
           std::to_string(port));

    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      close(fd);
      throw Napi::Error::New(env, "no uv loop");
    }
    poll_ = new uv_poll_t;
    if (uv_poll_init(loop, poll_, fd) != 0) {
      delete poll_;
      poll_ = nullptr;
      close(fd);
      throw Napi::Error::New(env, "uv_poll_init failed");
    }
    poll_->data = this;
    fd_ = fd;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "BfdSocket");
    uv_poll_start(poll_, UV_READABLE, OnReadable);
    // Stay alive while open: the poll handle points at this object.
    Ref();
  }

  ~BfdSocket() override { Shutdown(); }

 private:
  static void OnReadable(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<BfdSocket*>(h->data);
    if (self && self->fd_ >= 0) self->Drain();
  }

  // Reads until EAGAIN (bounded, so one flood cannot starve the loop) and hands each datagram to JS.
  void Drain() {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    for (int n = 0; n < 256 && fd_ >= 0; n++) {
      uint8_t buf[2048];
      alignas(cmsghdr) uint8_t cbuf[256];
      sockaddr_storage src;
      iovec iov{buf, sizeof(buf)};
      msghdr msg;
      memset(&msg, 0, sizeof(msg));
      msg.msg_name = &src;
      msg.msg_namelen = sizeof(src);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = cbuf;
      msg.msg_controllen = sizeof(cbuf);
      ssize_t r = recvmsg(fd_, &msg, MSG_DONTWAIT);
      if (r < 0) return;  // EAGAIN, or an error the next readable event reports again
      if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) truncated_++;
      int ttl = -1;
      uint32_t ifindex = 0;
      char dst[INET6_ADDRSTRLEN] = "";
      char srcs[INET6_ADDRSTRLEN] = "";
      int sport = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) {
          int v;
          memcpy(&v, CMSG_DATA(c), sizeof(v));
          ttl = v;
        } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
          in_pktinfo pi;
          memcpy(&pi, CMSG_DATA(c), sizeof(pi));
          ifindex = pi.ipi_ifindex;
          inet_ntop(AF_INET, &pi.ipi_addr, dst, sizeof(dst));
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT) {
          int v;
          memcpy(&v, CMSG_DATA(c), sizeof(v));
          ttl = v;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
          in6_pktinfo pi;
          memcpy(&pi, CMSG_DATA(c), sizeof(pi));
          ifindex = pi.ipi6_ifindex;
          inet_ntop(AF_INET6, &pi.ipi6_addr, dst, sizeof(dst));
        }
      }
      if (src.ss_family == AF_INET) {
        auto* a = (sockaddr_in*)&src;
        inet_ntop(AF_INET, &a->sin_addr, srcs, sizeof(srcs));
        sport = ntohs(a->sin_port);
      } else if (src.ss_family == AF_INET6) {
        auto* a = (sockaddr_in6*)&src;
        inet_ntop(AF_INET6, &a->sin6_addr, srcs, sizeof(srcs));
        sport = ntohs(a->sin6_port);
      }
      Napi::Buffer<uint8_t> data = Napi::Buffer<uint8_t>::Copy(env, buf, (size_t)r);
      // A callback that throws must not unwind into libuv (std::terminate): the error goes to 'uncaughtException'
      // as any callback's would, and the rest is read on the next readable event.
      try {
        callback_.MakeCallback(Value(),
                               {data, Napi::String::New(env, srcs), Napi::Number::New(env, sport),
                                Napi::String::New(env, dst), Napi::Number::New(env, ifindex), Napi::Number::New(env, ttl)},
                               *context_);
      } catch (const Napi::Error& e) {
        napi_fatal_exception(env, e.Value());
        return;
      }
    }
  }

  void Shutdown() {
    if (poll_) {
      uv_poll_stop(poll_);
      poll_->data = nullptr;
      uv_close((uv_handle_t*)poll_, [](uv_handle_t* h) { delete (uv_poll_t*)h; });
      poll_ = nullptr;
    }
    if (fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    bool wasOpen = fd_ >= 0;
    Shutdown();
    if (wasOpen) Unref();
    return info.Env().Undefined();
  }

  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }
  Napi::Value Truncated(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)truncated_); }

  int family_ = 4;
  int fd_ = -1;
  uint64_t truncated_ = 0;
  uv_poll_t* poll_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace

void InitBfdSocket(Napi::Env env, Napi::Object exports) { exports.Set("BfdSocket", BfdSocket::Define(env)); }

}  // namespace peak
