"""Is a question about the venue, or a general one (a poem, a sum) that the model may answer on its own?

Only asked when no section covers the question: then a venue question gets the fallback ("I don't have that
information"), never a guess, and a general one the model's ordinary answer. When in doubt a question that
names the place, its services or asks "is there / where / when / how much" counts as a venue question.
"""

from __future__ import annotations

import re

from daemon.knowledge.terms import normalize

_GENERAL = re.compile(
    r"\b(poem|poems|haiku|(?:tell|write|make up)(?: me)? (?:a |an )?(?:\w+ )?(?:story|stories)|joke|jokes|"
    r"riddle|song|lyrics|essay|translate|translation|calculate|"
    r"compute|solve|equation|math|maths|arithmetic|multiply|divide|define|definition|meaning of|spell|"
    r"synonym|write (?:a|an|me)|tell me (?:a|about (?:the )?(?:history|moon|sun|world|universe))|"
    r"who (?:was|is|wrote|invented|discovered)|"
    r"who are you|what are you|what can you do|how are you|capital of|recipe|code|python|program)\b"
    r"|\d+\s*[-+*/×÷^x]\s*\d+"
    r"|你是谁|你能做什么|你会什么|你好吗|写一|作诗|诗歌|一首|讲个故事|讲一个故事|编.{0,3}故事|写.{0,6}故事|笑话|谜语|翻译|计算|算一|等于|加上|减去|乘以|除以|定义|解释一下|是谁发明|首都|菜谱|代码|编程")
_GREETING = re.compile(r"^\W*(hi|hello|hey|good (?:morning|afternoon|evening)|thanks?|thank you|bye|goodbye|"
                       r"你好|您好|谢谢|再见|早上好|下午好|晚上好)\W*$")
_VENUE = re.compile(
    r"\b(here|this (?:place|library|museum|clinic|shop|store|building|centre|center|hospital|branch)|you|your|"
    r"we|our|open|opens|opening|close|closes|closed|closing|hours|today|tomorrow|tonight|weekend|holiday|"
    r"is there|are there|do you have|have you got|can i|may i|could i|am i allowed|allowed|where|nearest|"
    r"how much|how many|price|prices|cost|fee|fees|ticket|tickets|parking|park|toilet|toilets|restroom|wifi|"
    r"floor|entrance|exit|staff|desk|reception|appointment|booking|book a|reserve|member|membership|card|"
    r"borrow|return|rent|buy|sell|pay|payment|cash|cafe|coffee|food|drink|eat|locker|lockers|pet|pets|dog|"
    r"dogs|wheelchair|lift|elevator|charge|charging|printer|print|phone|contact|address|lost|near|nearby|"
    r"get here|bus|train|subway|metro|smoke|smoking)\b"
    r"|这里|这儿|这边|你们|贵馆|本馆|本店|贵店|馆内|店内|开门|关门|营业|开放|几点|什么时候|在哪|哪里|哪儿|有没有|"
    r"有.{0,8}吗|可以.{0,12}吗|能不能|能.{0,12}吗|多少钱|收费|价格|费用|门票|停车|厕所|洗手间|卫生间|无线|"
    r"预约|办卡|会员|借|还书|打印|电话|地址|楼|电梯|寄存|宠物|咖啡|吃|喝|附近|最近的|怎么去|怎么走|地铁|公交|交通|抽烟|吸烟")


_ARITHMETIC = re.compile(
    r"^\W*(?:what(?:'s| is)|how much is|calculate|compute)?\s*-?\d+(?:\.\d+)?"
    r"(?:\s*(?:[-+*/×÷^x]|times|plus|minus|divided by|multiplied by|to the power of)\s*-?\d+(?:\.\d+)?)+"
    r"\s*(?:=\s*)?\??\W*$"
    r"|^\W*\d+(?:\.\d+)?(?:\s*(?:[-+*/×÷]|加|减|乘以?|除以)\s*\d+(?:\.\d+)?)+\s*(?:等于|是|=)?\s*(?:多少|几)?\W*$")


def is_sum(question: str) -> bool:
    """A bare calculation ("What is 17 times 3?"): general even when its words match a section ("times")."""
    return bool(_ARITHMETIC.match(normalize(question)))


def is_general(question: str) -> bool:
    """True for a question that is clearly not about the venue (writing, maths, general knowledge, greetings)."""
    text = normalize(question)
    return bool(_GENERAL.search(text) or _GREETING.match(text) or is_sum(question))


def is_about_venue(question: str) -> bool:
    text = normalize(question)
    if is_general(question):
        return False
    return bool(_VENUE.search(text))
