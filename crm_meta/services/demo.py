"""Realistic Chinese demo data, so that every list, filter, dashboard and report has something to show.

Every record is written through ``RecordService.create`` (validation, auto-numbers, stamps apply);
afterwards the ``created_at``/``updated_at`` stamps are moved back in time so that dashboards have a
history. The same ``seed`` gives the same data (dates are relative to today).
"""
from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Sequence

from faker import Faker
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_meta.db.tables import ModelSet, utcnow
from crm_meta.errors import ValidationFailed
from crm_meta.services import clock
from crm_meta.services.dictionaries import Dictionaries
from crm_meta.services.records import Actor, RecordService

ENTITIES = ("customer", "contact", "follow_up", "demand", "feedback", "opportunity")
BATCH = 100  # records per commit

# -- reference data ------------------------------------------------------------------------------

# region code → (address prefix, city, district, admin division code, landline area code)
CITIES: dict[str, list[tuple[str, str, str, str, str]]] = {
    "north": [("北京市", "北京", "朝阳区", "110105", "010"), ("北京市", "北京", "海淀区", "110108", "010"),
              ("天津市", "天津", "滨海新区", "120116", "022"), ("河北省石家庄市", "石家庄", "长安区", "130102", "0311")],
    "east": [("上海市", "上海", "浦东新区", "310115", "021"), ("江苏省南京市", "南京", "鼓楼区", "320106", "025"),
             ("浙江省杭州市", "杭州", "西湖区", "330106", "0571"), ("江苏省苏州市", "苏州", "吴中区", "320506", "0512"),
             ("山东省济南市", "济南", "历下区", "370102", "0531")],
    "south": [("广东省深圳市", "深圳", "南山区", "440305", "0755"), ("广东省广州市", "广州", "天河区", "440106", "020"),
              ("福建省厦门市", "厦门", "思明区", "350203", "0592")],
    "central": [("湖北省武汉市", "武汉", "洪山区", "420111", "027"), ("湖南省长沙市", "长沙", "岳麓区", "430104", "0731"),
                ("河南省郑州市", "郑州", "金水区", "410105", "0371")],
    "west": [("四川省成都市", "成都", "武侯区", "510107", "028"), ("重庆市", "重庆", "渝北区", "500112", "023"),
             ("陕西省西安市", "西安", "雁塔区", "610113", "029")],
    "northeast": [("辽宁省沈阳市", "沈阳", "和平区", "210102", "024"), ("辽宁省大连市", "大连", "中山区", "210202", "0411"),
                  ("黑龙江省哈尔滨市", "哈尔滨", "南岗区", "230103", "0451")],
}
ALL_CITIES = [c for cities in CITIES.values() for c in cities]

INDUSTRY_WORDS = {
    "internet": ["网络科技", "信息技术", "软件", "数字科技", "云计算"],
    "manufacturing": ["精密机械", "智能装备", "电子", "新材料", "汽车零部件"],
    "retail": ["商贸", "连锁超市", "百货", "电子商务", "食品销售"],
    "services": ["企业管理咨询", "人力资源服务", "物业服务", "广告传媒", "会展服务"],
    "finance": ["投资管理", "融资租赁", "保险代理", "资产管理"],
    "education": ["教育科技", "职业培训", "文化传播"],
    "healthcare": ["医疗器械", "生物科技", "医药", "健康管理"],
    "logistics": ["物流", "供应链管理", "国际货运代理", "仓储服务"],
}
PRODUCTS = ["产品A", "产品B", "CRM企业版", "数据分析模块", "移动办公套件", "智能客服系统", "售后维保服务", "私有化部署方案"]
POSITIONS = ["总经理", "副总经理", "采购经理", "IT经理", "财务总监", "行政主管", "技术总监", "运营经理", "销售总监", "董事长助理"]
MOBILE_PREFIXES = ["138", "139", "137", "136", "135", "150", "151", "158", "159", "186", "187", "188",
                   "130", "131", "132", "155", "156", "185", "133", "153", "180", "189", "177", "199"]

FOLLOW_UP_CONTENT = {
    "prospect": ["首次电话沟通，介绍公司及{p}，客户表示近期有信息化升级计划",
                 "客户对{p}功能感兴趣，要求提供案例",
                 "添加客户{role}微信，发送公司介绍和{p}产品手册",
                 "展会后回访，客户对{p}有初步兴趣，暂无明确预算",
                 "客户在官网留言咨询{p}，电话确认需求范围和使用人数"],
    "intent": ["上门拜访{role}，现场演示{p}，客户认可操作便捷性",
               "与客户技术负责人沟通对接方案，客户关注数据迁移和系统集成",
               "发送{p}报价单，客户认为价格偏高，希望给予9折优惠",
               "客户内部评估中，采购负责人询问交付周期和付款方式",
               "组织线上演示会议，客户方{k}人参加，提出{n}项定制需求",
               "客户对{p}功能感兴趣，要求提供同行业案例"],
    "won": ["合同签订后回访，确认实施计划和培训安排",
            "季度回访，客户反馈系统运行稳定，有意增购{p}",
            "协调技术支持处理客户提出的数据导出问题，已解决",
            "续费沟通，确认明年服务范围和用户数",
            "上门培训新入职员工{k}人，收集使用建议"],
    "churned": ["客户已转用竞品，了解流失原因：价格及本地化服务",
                "流失客户回访，客户表示明年预算重新评估时可再联系",
                "发送新版本功能介绍，尝试重新激活合作",
                "电话回访，客户{role}已离职，需重新建立联系"],
}
CUSTOMER_FEEDBACK = ["希望尽快看到同行业案例", "对价格比较敏感，需内部讨论", "认可产品功能，等待领导审批",
                     "暂无明确需求，保持联系", "要求下周安排技术交流", "对服务响应速度表示满意",
                     "担心上线周期过长影响业务", "希望先试用一个月再决定"]
NEXT_STEPS = {
    "prospect": ["{m}月{d}日前发送产品案例资料", "{m}月{d}日电话回访，确认需求和预算", "{m}月{d}日前邀请客户参加产品发布会"],
    "intent": ["{m}月{d}日前提交正式报价方案", "{m}月{d}日安排上门演示", "{m}月{d}日前确认合同条款",
               "{m}月{d}日前发送产品案例资料"],
    "won": ["{m}月{d}日前完成培训计划", "{m}月{d}日季度回访", "{m}月{d}日前提交续费报价"],
    "churned": ["{m}月{d}日前发送新版本功能介绍", "{m}月{d}日电话回访，了解预算情况"],
}
DEMAND_TEXT = {
    "product_inquiry": ["客户咨询{p}的功能清单和报价，计划下季度采购", "希望了解{p}是否支持多门店、多组织架构管理",
                        "询问{p}与现有ERP系统的对接方式及费用"],
    "technical_support": ["系统导出Excel时数据格式错乱，需要技术支持排查", "客户需要协助配置审批流程和角色权限",
                          "移动端登录偶发超时，要求远程排查"],
    "custom_cooperation": ["希望定制开发行业报表，并与自有小程序对接", "探讨渠道代理合作，覆盖{city}及周边市场",
                           "需要私有化部署并对接企业微信单点登录"],
}
DEMAND_SOLUTION = ["安排售前工程师出具功能对照表并现场演示", "远程协助完成配置，提供操作手册和视频教程",
                   "评估工作量约{n}人天，已提交定制方案及报价", "已转技术部排查，预计一周内发布修复版本"]
FEEDBACK_TEXT = {
    "complaint": ["产品到货延迟{n}天，影响客户项目进度", "售后响应慢，工单提交后{n}小时无人联系",
                  "系统升级后报表数据与上月不一致", "发票开具信息错误，需要重新开具"],
    "suggestion": ["建议增加移动端批量审批功能", "希望培训资料提供视频版本", "建议客服热线延长服务时间至晚上8点",
                   "希望报表支持按区域、按负责人汇总"],
    "praise": ["实施顾问专业负责，项目提前{n}天上线", "客服响应及时，问题当天解决", "产品稳定好用，团队效率明显提升"],
}
FEEDBACK_HANDLING = {
    "complaint": ["客服主管致电致歉，当日安排工程师上门处理", "已联系物流加急配送并承担运费", "技术部远程排查并修复数据"],
    "suggestion": ["已记录并提交产品部评估", "与客户约定需求细节，纳入需求池"],
    "praise": ["已转达项目团队并在周会通报表扬"],
}
FEEDBACK_RESULT = {
    "complaint": ["问题已解决，客户认可处理结果", "已重新开具发票并寄出", "已补发货物，客户确认收货"],
    "suggestion": ["已纳入下一版本规划，上线后通知客户", "暂不排期，已向客户说明原因"],
    "praise": ["已回复客户感谢"],
}
KEY_NEEDS = ["统一管理客户资料和跟进记录", "销售过程可视化，按阶段统计漏斗", "与现有ERP/财务系统对接",
             "移动端随时录入拜访记录", "满足等保要求的私有化部署", "多分公司数据权限隔离"]
RISKS = ["客户预算审批周期较长", "竞争对手报价低约15%", "决策人即将调岗", "对交付周期要求紧"]
LOST_REASONS = ["价格高于竞争对手约15%，客户选择竞品", "客户预算削减，项目暂停", "竞品在当地有服务团队，客户更看重本地化服务",
                "客户决策人变更，需求取消"]
REMARKS = ["年度框架采购客户，需每季度回访", "老客户转介绍", "关注数据安全，合同需附保密协议", "春节前后为采购高峰"]

# weights for the codes of the default dictionaries; codes an admin added get weight 1
W_INDUSTRY = {"internet": 3, "manufacturing": 3, "retail": 2, "services": 2, "finance": 1, "education": 1,
              "healthcare": 1, "logistics": 1}
W_GRADE = {"A": 2, "B": 3.5, "C": 3, None: 1.5}
W_SOURCE = {"trade_show": 2, "online_ads": 2, "referral": 2, "website": 2, "cold_call": 1, None: 0.5}
W_SIZE = {"micro": 2, "small": 3, "medium": 2, "large": 1, None: 1}
W_STAGE = {"initial_contact": 2, "needs_analysis": 1.8, "proposal": 1.5, "negotiation": 1.2, "contract_signed": 1,
           "won_paid": 1.5, "lost": 1}
TYPE_BY_STAGE = {"initial_contact": {"prospect": 3, "intent": 1}, "needs_analysis": {"intent": 3, "prospect": 2},
                 "proposal": {"intent": 1}, "negotiation": {"intent": 1}, "contract_signed": {"won": 1},
                 "won_paid": {"won": 1}, "lost": {"churned": 5, "prospect": 3, "intent": 2}}
TYPE_NO_OPPORTUNITY = {"prospect": 4.5, "intent": 2.5, "won": 1.5, "churned": 1.5}
W_PRIORITY = {"high": 1, "medium": 2, "low": 1}
W_DEMAND_STATUS = {"pending": 2, "in_progress": 2, "done": 2, "closed": 1}
W_METHOD = {"phone": 4, "visit": 2, "email": 1.5, "wechat": 3, "sms": 0.5}
FEEDBACK_P = {"prospect": 0.12, "intent": 0.25, "won": 0.55, "churned": 0.4}
SATISFACTION = {"complaint": [1, 1.5, 2.5, 3, 2], "suggestion": [0, 0.2, 1, 3, 2], "praise": [0, 0, 0, 1, 3]}
REVENUE = {"micro": (100, 1000), "small": (1000, 5000), "medium": (5000, 50000), "large": (50000, 800000)}  # 万元
DEAL = {"micro": (3, 20), "small": (10, 80), "medium": (30, 300), "large": (100, 1000), None: (5, 100)}  # 万元

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]


def credit_code(admin: str, serial: int) -> str:
    """A unified social credit code with valid check characters, unique per ``serial``.

    91 (enterprise) + 6-digit division code + 9-char organisation code (GB 11714 check) + check (GB 32100).
    """
    body = f"{100 + serial * 7919 % 900:03d}{serial:05d}" if serial < 10**5 else f"{serial:08d}"
    c = 11 - sum(int(d) * w for d, w in zip(body, [3, 7, 9, 10, 5, 8, 4, 2])) % 11
    head = "91" + admin + body + ("X" if c == 10 else "0" if c == 11 else str(c))
    total = sum(USCC_CHARS.index(ch) * w for ch, w in zip(head, USCC_WEIGHTS))
    return head + USCC_CHARS[(31 - total % 31) % 31]


# -- helpers -------------------------------------------------------------------------------------

def _codes(models: ModelSet, dicts: Dictionaries, name: str) -> list[str]:
    """Active codes of dictionary ``name`` from the registry that the stored dictionary also accepts."""
    codes = [i.code for i in models.registry.dictionary(name).items if i.active]
    usable = [c for c in codes if (item := dicts.get(name, c)) is not None and item.active]
    return usable or codes


def _weighted(rng: random.Random, choices: Sequence[Any], weights: dict[Any, float]) -> Any:
    return rng.choices(list(choices), [weights.get(c, 1) for c in choices])[0]


def _cover(rng: random.Random, choices: Sequence[Any], n: int, weights: dict[Any, float] | None = None) -> list:
    """``n`` picks in which every choice appears at least once when n allows, the rest weighted."""
    choices = list(choices)
    if not choices:
        return [None] * n
    picks = choices[:] if n >= len(choices) else []
    w = [weights.get(c, 1) for c in choices] if weights else None
    picks += rng.choices(choices, w, k=n - len(picks))
    rng.shuffle(picks)
    return picks


def _flags(rng: random.Random, probs: Sequence[float], at_least: int) -> list[bool]:
    flags = [rng.random() < p for p in probs]
    off = [i for i, f in enumerate(flags) if not f]
    rng.shuffle(off)
    for i in off[:max(0, min(at_least, len(flags)) - sum(flags))]:
        flags[i] = True
    return flags


def _moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A moment in [start, end], in office hours when the span allows.

    Always draws the same number of random values, so the data does not depend on the time of day.
    """
    r_day, hour, minute, r_any = rng.random(), rng.randint(9, 18), rng.randint(0, 59), rng.random()
    if end <= start:
        return start
    day = start.date() + timedelta(days=int(r_day * ((end.date() - start.date()).days + 1)))
    t = datetime.combine(day, time(hour, minute))
    if start <= t <= end:
        return t
    return start + timedelta(seconds=int(r_any * (end - start).total_seconds()))


def _mobile(rng: random.Random) -> str:
    return f"{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10**8):08d}"


def _wan(rng: random.Random, lo: int, hi: int, step: int = 1000) -> Decimal:
    """An amount in yuan between lo and hi 万元, rounded to ``step`` yuan."""
    return Decimal(rng.randint(lo * 10_000 // step, hi * 10_000 // step) * step)


class _Writer:
    """Creates records through RecordService, each at its own past moment (the clock frozen there:
    its stamps, its number's date, its audit and status history), and commits in batches."""

    def __init__(self, session: Session, models: ModelSet, lang: str, usernames: dict[int, str]):
        self.session, self.models, self.lang, self.usernames = session, models, lang, usernames
        self.dicts = Dictionaries.load(session, models.system["dict_item"])
        self.services: dict[tuple[str, int], RecordService] = {}
        self.counts = dict.fromkeys(ENTITIES, 0)
        self.pending = 0

    def create(self, entity: str, owner: int, data: dict[str, Any], stamp: datetime) -> Any:
        svc = self.services.get((entity, owner))
        if svc is None:
            svc = self.services[(entity, owner)] = RecordService(
                self.session, self.models, entity, Actor(owner, self.lang, username=self.usernames.get(owner)),
                self.dicts)
        try:
            with clock.frozen(stamp):
                obj = svc.create(data)
        except ValidationFailed as exc:
            raise ValueError(f"demo {entity} rejected: {exc} — {data!r}") from exc
        self.counts[entity] += 1
        self.pending += 1
        if self.pending >= BATCH:
            self.commit()
        return obj

    def commit(self) -> None:
        self.session.commit()
        self.pending = 0


# -- the loader ----------------------------------------------------------------------------------

def load_demo(session: Session, models: ModelSet, owner_ids: list[int], *, customers: int = 300,
              seed: int = 20240501, lang: str = "zh", ticket_owner_ids: Sequence[int] = ()) -> dict[str, int]:
    """Create ``customers`` demo customers with contacts, follow-ups, demands, feedback and
    opportunities owned by ``owner_ids``; return the number of records created per entity.
    ``ticket_owner_ids``: the people handling tickets (the service department), who then own about
    four in five feedback tickets — the rest stay with the customer's owner, as when a rep keeps one."""
    if not owner_ids:
        raise ValueError("load_demo needs at least one owner id")
    from crm_meta.assignment import suspended  # the demo places its owners itself

    with suspended():
        return _load(session, models, owner_ids, customers, seed, lang, ticket_owner_ids)


def _load(session: Session, models: ModelSet, owner_ids: list[int], customers: int, seed: int, lang: str,
          ticket_owner_ids: Sequence[int]) -> dict[str, int]:
    rng = random.Random(seed)
    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    user = models.model("customer").__mapper__.relationships["created_by"].mapper.class_
    people = [*owner_ids, *ticket_owner_ids]  # the audit trail names who did what, as for a signed-in user
    usernames = dict(session.execute(select(user.id, user.username).where(user.id.in_(people))).all())
    w = _Writer(session, models, lang, usernames)
    codes = {name: _codes(models, w.dicts, name) for name in (
        "customer_type", "industry", "grade", "source", "region", "company_size", "customer_tag", "follow_up_method",
        "demand_type", "priority", "demand_status", "feedback_type", "feedback_channel", "ticket_priority",
        "opportunity_stage")}
    now = datetime.now().replace(microsecond=0)  # business times (followed_at, …) are local
    offset = timedelta(minutes=round((utcnow() - datetime.now()).total_seconds() / 60))  # stamps are UTC
    today = now.date()

    def stamp(local: datetime, delay_minutes: int = 0) -> datetime:
        return min(local + timedelta(minutes=delay_minutes), now) + offset

    table = models.model("customer").__table__
    taken_codes = {c for (c,) in session.execute(select(table.c.credit_code).where(table.c.credit_code.isnot(None)))}
    taken_names = {n for (n,) in session.execute(select(table.c.name))}

    # plan the customers so that every dictionary code shows up somewhere -----------------------
    n = customers
    days_ago = [int(rng.triangular(0, 365, 0)) for _ in range(n)]  # more recent ones: a growing business
    created = sorted(min(now - timedelta(hours=2), datetime.combine(today - timedelta(days=d), time(9))
                         + timedelta(minutes=rng.randint(0, 540))) for d in days_ago)
    owners = _cover(rng, owner_ids, n)
    industries = _cover(rng, codes["industry"], n, W_INDUSTRY)
    grades = _cover(rng, codes["grade"] + [None], n, W_GRADE)
    sources = _cover(rng, codes["source"] + [None], n, W_SOURCE)
    regions = _cover(rng, codes["region"], n)
    sizes = _cover(rng, codes["company_size"] + [None], n, W_SIZE)
    has_opp = _flags(rng, [0.5] * n, len(codes["opportunity_stage"]))
    stages = iter(_cover(rng, codes["opportunity_stage"], sum(has_opp), W_STAGE))
    stage_of = [next(stages) if h else None for h in has_opp]
    types = codes["customer_type"]

    def type_for(stage: str | None) -> str:
        weights = TYPE_BY_STAGE.get(stage, {}) if stage else TYPE_NO_OPPORTUNITY
        usable = [t for t in types if weights.get(t)]
        return _weighted(rng, usable, weights) if usable else rng.choice(types)

    ctype = [type_for(s) for s in stage_of]
    for t in types:  # make sure every customer type appears
        if n >= len(types) and t not in ctype:
            spare = [i for i in range(n) if ctype.count(ctype[i]) > 1]
            calm = [i for i in spare if not has_opp[i]] or spare
            if calm:
                ctype[rng.choice(calm)] = t
    has_demand = _flags(rng, [0.4] * n, max(len(codes[d]) for d in ("demand_type", "priority", "demand_status")))
    demand_plan = iter(zip(*(_cover(rng, codes[d], sum(has_demand), wt) for d, wt in (
        ("demand_type", None), ("priority", W_PRIORITY), ("demand_status", W_DEMAND_STATUS)))))
    has_feedback = _flags(rng, [FEEDBACK_P.get(t, 0.3) for t in ctype], len(codes["feedback_type"]))
    feedback_types = iter(_cover(rng, codes["feedback_type"], sum(has_feedback)))
    n_follow = [max(1, min(6, rng.choices([1, 2, 3, 4, 5], [3, 3, 2, 1.5, 1])[0]
                           + (ctype[i] in ("intent", "won")) + (grades[i] == "A"))) for i in range(n)]
    methods = iter(_cover(rng, codes["follow_up_method"], sum(n_follow), W_METHOD))
    tag_codes = codes["customer_tag"]
    contract_serial = 0
    fb_entity = models.registry.entity("feedback")  # ticket status and dispatch, when the dictionary has them
    ticket_fields = {name: fb_entity.has_field(name) and w.dicts.get(fb_entity.field(name).dictionary, code) is not None
                     for name, code in (("status", "closed"), ("dispatch_department", "service"))}

    for i in range(n):
        owner, ctime, ct, size = owners[i], created[i], ctype[i], sizes[i]
        region = regions[i]
        prov, city, district, admin, area = rng.choice(CITIES.get(region) or ALL_CITIES)
        words = INDUSTRY_WORDS.get(industries[i], ["实业", "科技"])
        for _ in range(20):
            brand = fake.company_prefix()
            suffix = rng.choices(["有限公司", "股份有限公司", "集团有限公司"], [75, 15, 10 if size == "large" else 0])[0]
            name = f"{city}{brand}{rng.choice(words)}{suffix}"
            if name not in taken_names:
                break
        else:
            name = f"{name}（{i + 1}）"
        taken_names.add(name)
        domain = f"{fake.domain_word()}{rng.choice(['.com', '.com.cn', '.cn', '.net'])}"
        contact_name = fake.name()
        contact_phone = (_mobile(rng) if rng.random() < 0.85
                         else f"{area}-{rng.randint(2, 8)}{rng.randrange(10**6, 10**7)}")  # a landline
        tags: list[str] = []
        if "key_account" in tag_codes and grades[i] == "A" and rng.random() < 0.6:
            tags.append("key_account")
        for code in tag_codes:
            if code not in tags and rng.random() < 0.15:
                tags.append(code)
        address = f"{prov}{district}{fake.street_name()}{rng.randint(1, 999)}号"
        if rng.random() < 0.5:
            address += f"{fake.building_number().upper()}{rng.randint(2, 28)}{rng.randint(1, 20):02d}室"
        data: dict[str, Any] = {
            "name": name, "customer_type": ct, "industry": industries[i], "contact_name": contact_name,
            "contact_phone": contact_phone, "grade": grades[i], "source": sources[i], "size": size,
            "region": region, "owner": owner, "tags": tags, "address": address,
        }
        if rng.random() < 0.7:
            serial = i + 1
            code = credit_code(admin, serial)
            while code in taken_codes:
                serial += n + 1
                code = credit_code(admin, serial)
            taken_codes.add(code)
            data["credit_code"] = code
        if size and rng.random() < 0.85:
            data["annual_revenue"] = _wan(rng, *REVENUE.get(size, (100, 10000)), step=10_000)
        if rng.random() < 0.8:
            data["email"] = f"{rng.choice(['info', 'contact', 'sales', 'service', 'office'])}@{domain}"
        if rng.random() < 0.6:
            data["website"] = f"https://www.{domain}"
        if rng.random() < 0.2:
            data["remark"] = rng.choice(REMARKS)
        customer = w.create("customer", owner, data, stamp(ctime))
        cid = customer.id

        # contacts: the first one is the customer's contact person ------------------------------
        for k in range(rng.choices([0, 1, 2, 3], [15, 40, 30, 15])[0]):
            contact = {"customer": cid, "name": contact_name if k == 0 else fake.name(),
                       "position": rng.choice(POSITIONS), "is_primary": k == 0, "owner": owner,
                       "phone": contact_phone if k == 0 else _mobile(rng)}
            if rng.random() < 0.7:
                contact["email"] = f"{fake.user_name()}@{domain}"
            if rng.random() < 0.4:
                contact["birthday"] = date(rng.randint(1965, 1998), rng.randint(1, 12), rng.randint(1, 28))
            w.create("contact", owner, contact, stamp(ctime, rng.randint(5, 120)))

        # follow-ups over the last 180 days -------------------------------------------------------
        start = max(ctime, now - timedelta(days=180))
        times = sorted(_moment(rng, start, now) for _ in range(n_follow[i]))
        phase = ct if ct in FOLLOW_UP_CONTENT else "intent"
        for k, at in enumerate(times):
            product = rng.choice(PRODUCTS)
            content = rng.choice(FOLLOW_UP_CONTENT[phase]).format(
                p=product, role=rng.choice(POSITIONS), k=rng.randint(3, 12), n=rng.randint(2, 5))
            follow = {"customer": cid, "followed_at": at, "method": next(methods), "content": content,
                      "owner": owner}
            if rng.random() < 0.6:
                follow["customer_feedback"] = rng.choice(CUSTOMER_FEEDBACK)
            if ct != "churned" or rng.random() < 0.4:
                nxt = at.date() + timedelta(days=rng.randint(2, 14))
                follow["next_step"] = rng.choice(NEXT_STEPS[phase]).format(m=nxt.month, d=nxt.day)
                follow["next_date"] = nxt
            w.create("follow_up", owner, follow, stamp(at, rng.randint(5, 600)))

        # a demand --------------------------------------------------------------------------------
        if has_demand[i]:
            dtype, priority, status = next(demand_plan)
            at = _moment(rng, max(ctime, now - timedelta(days=200)), now)
            demand = {"customer": cid, "demand_type": dtype, "priority": priority, "status": status,
                      "description": rng.choice(DEMAND_TEXT.get(dtype) or DEMAND_TEXT["product_inquiry"]).format(
                          p=rng.choice(PRODUCTS), city=city),
                      "owner": owner if rng.random() < 0.75 else rng.choice(owner_ids)}
            if status != "pending":
                demand["solution"] = rng.choice(DEMAND_SOLUTION).format(n=rng.randint(5, 40))
            w.create("demand", demand["owner"], demand, stamp(at))

        # feedback --------------------------------------------------------------------------------
        if has_feedback[i]:
            ftype = next(feedback_types)
            at = _moment(rng, max(ctime, now - timedelta(days=180)), now)
            kind = ftype if ftype in FEEDBACK_TEXT else "suggestion"
            ticket = codes["ticket_priority"]
            fb = {"customer": cid, "feedback_type": ftype, "feedback_at": at,
                  "channel": rng.choice(codes["feedback_channel"]) if rng.random() < 0.9 else None,
                  "priority": _weighted(rng, ticket, {"urgent": 3, "important": 3, "normal": 2} if kind == "complaint"
                                        else {"urgent": 0, "important": 1, "normal": 5}),
                  "description": rng.choice(FEEDBACK_TEXT[kind]).format(n=rng.randint(2, 10)),
                  "owner": owner if rng.random() < 0.6 else rng.choice(owner_ids)}
            if ticket_owner_ids and rng.random() < 0.8:
                fb["owner"] = rng.choice(ticket_owner_ids)
            if rng.random() < 0.85:  # handled; the rest are still open
                fb["handling"] = rng.choice(FEEDBACK_HANDLING[kind])
                fb["result"] = rng.choice(FEEDBACK_RESULT[kind])
                fb["satisfaction"] = rng.choices([1, 2, 3, 4, 5], SATISFACTION[kind])[0]
                if ticket_fields["status"]:  # answered tickets are closed (or handled, when the customer is unhappy)
                    fb["status"] = "closed" if fb["satisfaction"] >= 3 else "handled"
            if ticket_fields["dispatch_department"]:
                fb["dispatch_department"] = "service"
            w.create("feedback", fb["owner"], fb, stamp(at, rng.randint(10, 240)))

        # an opportunity --------------------------------------------------------------------------
        if stage_of[i]:
            st = stage_of[i]
            product = rng.choice(PRODUCTS)
            closed = st in ("contract_signed", "won_paid", "lost")
            at = _moment(rng, ctime, max(ctime, now - timedelta(days=14 if closed else 0)))
            amount = _wan(rng, *DEAL.get(size, DEAL[None]))
            opp: dict[str, Any] = {"name": f"{brand}{product}采购项目", "customer": cid, "stage": st,
                                   "amount": amount, "owner": owner, "key_needs": rng.choice(KEY_NEEDS)}
            if rng.random() < 0.35:
                opp["risk"] = rng.choice(RISKS)
            if st in ("contract_signed", "won_paid"):
                effective = min(today, at.date() + timedelta(days=rng.randint(7, 60)))
                contract_serial += 1
                opp.update(contract_no=f"HT{effective:%Y%m%d}{contract_serial:04d}",
                           contract_amount=(amount * Decimal(rng.randint(85, 100)) / 100).quantize(Decimal("1")),
                           effective_date=effective, expected_close_date=effective)
            elif st == "lost":
                opp.update(lost_reason=rng.choice(LOST_REASONS),
                           expected_close_date=min(today, at.date() + timedelta(days=rng.randint(14, 90))))
            else:  # open: mostly ahead, a few overdue
                days = rng.randint(-20, -1) if rng.random() < 0.1 else rng.randint(7, 120)
                opp["expected_close_date"] = today + timedelta(days=days)
            w.create("opportunity", owner, opp, stamp(at))

    w.commit()
    # the stamps were moved back in time after the record hooks ran: recompute what derives from them
    from crm_meta.services import followups, sla

    followups.backfill(session, models)
    sla.backfill(session, models, answered="midpoint")
    session.commit()
    return dict(w.counts)
